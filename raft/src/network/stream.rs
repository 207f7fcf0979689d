//! `AppendStream`: the client end of one open append-entries stream to a peer. One request
//! is in flight at a time (openraft awaits each append before it sends the next to the same
//! target); each carries a sequence number and its reply must carry the same one. A failed
//! call leaves the stream unusable: the caller drops it and opens a fresh one for its next
//! call; a stream dropped with its request unanswered is counted in `NetworkStats`. It must
//! not retry, and must not map failures to openraft's errors (`Peer` does).

use super::peer::NetworkStats;
use singularity_proto::v1::raft_service_client::RaftServiceClient;
use singularity_proto::v1::raft_stream_reply::Result as StreamResult;
use singularity_proto::v1::{RaftStreamReply, RaftStreamRequest};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// Requests queued to the transport, at most: one is in flight, and the queue holds it.
const REQUESTS_QUEUED: usize = 1;

/// Why a call on a stream did not produce openraft's encoded result.
#[derive(Debug)]
pub(crate) enum StreamFailure {
    /// The stream could not be opened, or it failed with this gRPC status.
    Status(Status),
    /// The stream had ended (the peer closed it or the connection went away).
    Closed(&'static str),
    /// The reply answered another request than the one sent: a transport bug; never used.
    Mismatch { sent: u64, got: u64 },
    /// The peer refused this request before it reached Raft, saying why.
    Refused(String),
    /// The reply carried neither a result nor a refusal.
    Empty { seq: u64 },
}

impl std::fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamFailure::Status(status) => write!(f, "append-entries stream: {status}"),
            StreamFailure::Closed(why) => write!(f, "append-entries stream closed: {why}"),
            StreamFailure::Mismatch { sent, got } => write!(
                f,
                "append-entries stream out of step: sent request {sent}, the reply answers {got}"
            ),
            StreamFailure::Refused(why) => write!(f, "append-entries request refused: {why}"),
            StreamFailure::Empty { seq } => {
                write!(f, "append-entries stream: reply {seq} carries no result")
            }
        }
    }
}

/// One open append-entries stream.
pub(crate) struct AppendStream {
    requests: mpsc::Sender<RaftStreamRequest>,
    replies: Streaming<RaftStreamReply>,
    /// The sequence number of the next request (the first is 1).
    next_seq: u64,
    /// Set while a request is unanswered: dropped then, the stream is counted as dropped.
    in_flight: bool,
    stats: Arc<NetworkStats>,
}

impl Drop for AppendStream {
    fn drop(&mut self) {
        if self.in_flight {
            self.stats.streams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AppendStream {
    /// Opens a stream (one round trip: the peer answers with the stream's headers). A peer
    /// that does not know the RPC answers `Unimplemented`.
    pub(crate) async fn open(
        client: &mut RaftServiceClient<Channel>,
        stats: Arc<NetworkStats>,
    ) -> Result<AppendStream, StreamFailure> {
        let (requests, queued) = mpsc::channel(REQUESTS_QUEUED);
        let replies = client
            .append_entries_stream(ReceiverStream::new(queued))
            .await
            .map_err(StreamFailure::Status)?
            .into_inner();
        stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        Ok(AppendStream {
            requests,
            replies,
            next_seq: 1,
            in_flight: false,
            stats,
        })
    }

    /// Whether the transport has let go of the request side (the connection is gone): such a
    /// stream is dropped before a request is sent on it.
    pub(crate) fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }

    /// Sends one encoded append-entries request and returns openraft's encoded result. On any
    /// error but `Refused` and `Empty` (answered in step) the stream must be dropped: its next
    /// reply is unknown.
    pub(crate) async fn call(&mut self, data: Vec<u8>) -> Result<Vec<u8>, StreamFailure> {
        assert!(
            !self.in_flight,
            "a stream with an unanswered request is never reused"
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight = true;
        self.requests
            .send(RaftStreamRequest { seq, data })
            .await
            .map_err(|_| StreamFailure::Closed("the request side is gone"))?;
        let reply = match self.replies.message().await {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err(StreamFailure::Closed("the peer ended it")),
            Err(status) => return Err(StreamFailure::Status(status)),
        };
        if reply.seq != seq {
            return Err(StreamFailure::Mismatch {
                sent: seq,
                got: reply.seq,
            });
        }
        self.in_flight = false;
        match reply.result {
            Some(StreamResult::Data(data)) => Ok(data),
            Some(StreamResult::Refused(why)) => Err(StreamFailure::Refused(why)),
            None => Err(StreamFailure::Empty { seq }),
        }
    }
}
