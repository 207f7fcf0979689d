//! `AppendLink`: the leader's end of one append-entries link to a peer, a plain TCP
//! connection in the format of `frame` (no HTTP/2: the leader's replication task writes each
//! request to the socket and reads the reply itself, with no connection or body tasks between).
//! One request is in flight at a time (openraft awaits each append before it sends the next to
//! the same target); each carries a sequence number and its reply must carry the same one. A
//! failed call leaves the link unusable: the caller drops it and opens a fresh one for its next
//! call; a link dropped with its request unanswered is counted in `NetworkStats`. It must not
//! retry, and must not map failures to openraft's errors (`Peer` does).

use super::frame::{self, FrameError, LinkAnswer, LinkRequest, PREFACE};
use super::peer::NetworkStats;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Read buffer of a link: a typical reply is read with one system call.
const LINK_READ_BUFFER_BYTES: usize = 16 * 1024;

/// Why a call on a link did not produce openraft's encoded result.
#[derive(Debug)]
pub(crate) enum LinkFailure {
    /// The peer could not be reached, or the connection failed.
    Io(std::io::Error),
    /// The peer answered the preface with something else: a replica without the link (an
    /// older version, which speaks only gRPC).
    Unsupported,
    /// The link had ended (the peer closed it).
    Closed(&'static str),
    /// A frame could not be read: too large or malformed.
    Frame(String),
    /// The reply answered another request than the one sent: a transport bug; never used.
    Mismatch { sent: u64, got: u64 },
    /// The peer refused this request before it reached Raft, saying why.
    Refused(String),
}

impl std::fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkFailure::Io(e) => write!(f, "append-entries link: {e}"),
            LinkFailure::Unsupported => {
                write!(f, "the peer does not serve append-entries links")
            }
            LinkFailure::Closed(why) => write!(f, "append-entries link closed: {why}"),
            LinkFailure::Frame(why) => write!(f, "append-entries link: {why}"),
            LinkFailure::Mismatch { sent, got } => write!(
                f,
                "append-entries link out of step: sent request {sent}, the reply answers {got}"
            ),
            LinkFailure::Refused(why) => write!(f, "append-entries request refused: {why}"),
        }
    }
}

impl From<FrameError> for LinkFailure {
    fn from(e: FrameError) -> LinkFailure {
        match e {
            FrameError::Io(e) => LinkFailure::Io(e),
            other => LinkFailure::Frame(other.to_string()),
        }
    }
}

/// One open append-entries link.
pub(crate) struct AppendLink {
    io: BufReader<TcpStream>,
    /// The sequence number of the next request (the first is 1).
    next_seq: u64,
    /// Set while a request is unanswered: dropped then, the link is counted as dropped.
    in_flight: bool,
    stats: Arc<NetworkStats>,
}

impl Drop for AppendLink {
    fn drop(&mut self) {
        if self.in_flight {
            self.stats.links_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AppendLink {
    /// Connects to `addr` (`host:port`) and exchanges the preface (one round trip). The caller
    /// bounds the time.
    pub(crate) async fn open(
        addr: &str,
        stats: Arc<NetworkStats>,
    ) -> Result<AppendLink, LinkFailure> {
        let socket = TcpStream::connect(addr).await.map_err(LinkFailure::Io)?;
        // Small requests and replies must not wait for Nagle's algorithm.
        socket.set_nodelay(true).map_err(LinkFailure::Io)?;
        let mut io = BufReader::with_capacity(LINK_READ_BUFFER_BYTES, socket);
        io.write_all(PREFACE).await.map_err(LinkFailure::Io)?;
        let mut echoed = [0u8; PREFACE.len()];
        match io.read_exact(&mut echoed).await {
            Ok(_) if &echoed == PREFACE => {}
            // An older replica hands the bytes to its HTTP/2 server, which answers with its own
            // frames or closes the connection.
            Ok(_) => return Err(LinkFailure::Unsupported),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(LinkFailure::Unsupported)
            }
            Err(e) => return Err(LinkFailure::Io(e)),
        }
        stats.links_opened.fetch_add(1, Ordering::Relaxed);
        Ok(AppendLink {
            io,
            next_seq: 1,
            in_flight: false,
            stats,
        })
    }

    /// Whether the link is known to be unusable without sending on it: the peer closed it, or
    /// sent bytes nobody asked for. Such a link is dropped before a request is sent on it.
    pub(crate) fn is_closed(&self) -> bool {
        if !self.io.buffer().is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        match self.io.get_ref().try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            // End of stream, unasked-for bytes, or an error.
            _ => true,
        }
    }

    /// Sends one encoded append-entries request and returns openraft's encoded result. On any
    /// error the link must be dropped.
    pub(crate) async fn call(&mut self, data: Vec<u8>) -> Result<Vec<u8>, LinkFailure> {
        assert!(
            !self.in_flight,
            "a link with an unanswered request is never reused"
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight = true;
        frame::write_request(&mut self.io, &LinkRequest { seq, data })
            .await
            .map_err(LinkFailure::Io)?;
        let reply = frame::read_reply(&mut self.io)
            .await?
            .ok_or(LinkFailure::Closed("the peer ended it"))?;
        if reply.seq != seq {
            return Err(LinkFailure::Mismatch {
                sent: seq,
                got: reply.seq,
            });
        }
        self.in_flight = false;
        match reply.answer {
            LinkAnswer::Result(data) => Ok(data),
            LinkAnswer::Refused(why) => Err(LinkFailure::Refused(why)),
        }
    }
}
