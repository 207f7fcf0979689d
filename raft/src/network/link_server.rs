//! The follower's end of append-entries links, and the door every connection to a replica's
//! port comes through: `route_connections` accepts each connection, turns on TCP_NODELAY, and
//! looks at its first byte. A link's preface (see `frame`) is served here, in one task per
//! link that reads a request, hands it to the local `Raft`, and writes the reply, strictly in
//! order; anything else (HTTP/2: clients, peers' vote and install-snapshot) goes to the tonic
//! server. Links end when the replica stops, and when idle for `MAX_LINK_IDLE_MS`. It must not
//! touch storage directly.

use super::frame::{self, FrameError, LinkAnswer, LinkReply, LinkRequest, PREFACE};
use super::{decode_payload, encode_payload};
use crate::limits::MAX_LINK_IDLE_MS;
use crate::types::{Raft, TypeConfig};
use openraft::raft::AppendEntriesRequest;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// How long a new connection may stay silent before it is handed to the gRPC server anyway.
const FIRST_BYTE_WAIT_MS: u64 = 10_000;
/// How long a link's preface may take to arrive whole once its first byte has.
const PREFACE_WAIT_MS: u64 = 5_000;
/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_RETRY_MS: u64 = 50;
/// Read buffer of a link: a typical request is read with one system call.
const LINK_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Connections for the gRPC server, as `serve_with_incoming` takes them.
pub type GrpcConnections = mpsc::Receiver<std::io::Result<TcpStream>>;

/// Accepts connections on `listener` until `stopping` turns `true`, serving append-entries
/// links itself and sending every other connection to the returned receiver (the gRPC server's
/// incoming connections, which end when this stops).
pub fn route_connections(
    listener: TcpListener,
    raft: Raft,
    stopping: watch::Receiver<bool>,
) -> (GrpcConnections, tokio::task::JoinHandle<()>) {
    let (to_grpc, grpc_connections) = mpsc::channel(64);
    let router = tokio::spawn(accept_loop(listener, raft, stopping, to_grpc));
    (grpc_connections, router)
}

async fn accept_loop(
    listener: TcpListener,
    raft: Raft,
    mut stopping: watch::Receiver<bool>,
    to_grpc: mpsc::Sender<std::io::Result<TcpStream>>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping.wait_for(|stopping| *stopping) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                // Without it small replies wait for Nagle's algorithm and the peer's delayed
                // ACK (~40 ms stalls at the tail).
                if let Err(e) = socket.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
                }
                tokio::spawn(route(
                    socket,
                    raft.clone(),
                    stopping.clone(),
                    to_grpc.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
            }
        }
    }
}

/// Sends one connection where its first byte says it belongs.
async fn route(
    socket: TcpStream,
    raft: Raft,
    mut stopping: watch::Receiver<bool>,
    to_grpc: mpsc::Sender<std::io::Result<TcpStream>>,
) {
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        biased;
        _ = stopping.wait_for(|stopping| *stopping) => return,
        peeked = tokio::time::timeout(
            Duration::from_millis(FIRST_BYTE_WAIT_MS),
            socket.peek(&mut first),
        ) => peeked,
    };
    if matches!(peeked, Ok(Ok(1))) && first[0] == PREFACE[0] {
        serve_link(socket, raft, stopping).await;
    } else {
        // HTTP/2, a silent or closed connection: the gRPC server answers or closes it. It is
        // gone only while the replica stops.
        let _ = to_grpc.send(Ok(socket)).await;
    }
}

/// Serves one append-entries link until the leader closes it, it fails, or the replica stops.
async fn serve_link(socket: TcpStream, raft: Raft, mut stopping: watch::Receiver<bool>) {
    let peer = socket
        .peer_addr()
        .map(|addr| addr.to_string())
        .unwrap_or_else(|_| "an unknown address".to_string());
    let mut io = BufReader::with_capacity(LINK_READ_BUFFER_BYTES, socket);
    let mut preface = [0u8; PREFACE.len()];
    let read = tokio::time::timeout(
        Duration::from_millis(PREFACE_WAIT_MS),
        io.read_exact(&mut preface),
    )
    .await;
    if !matches!(read, Ok(Ok(_))) || &preface != PREFACE {
        tracing::warn!(%peer, "closed a connection that is neither HTTP/2 nor an append-entries link");
        return;
    }
    if io.write_all(PREFACE).await.is_err() {
        return;
    }
    loop {
        // Only a stopping replica abandons a read halfway; the link ends then anyway.
        let read = tokio::select! {
            biased;
            _ = stopping.wait_for(|stopping| *stopping) => return,
            read = tokio::time::timeout(
                Duration::from_millis(MAX_LINK_IDLE_MS),
                frame::read_request(&mut io),
            ) => read,
        };
        let Ok(read) = read else {
            tracing::info!(%peer, "closed an append-entries link idle for {MAX_LINK_IDLE_MS} ms");
            return;
        };
        let request = match read {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "append-entries link failed");
                return;
            }
            Err(e) => {
                // The frame cannot be skipped reliably: refuse it, saying why, and close.
                tracing::warn!(%peer, error = %e, "refused an append-entries frame");
                let refusal = LinkReply {
                    seq: 0,
                    answer: LinkAnswer::Refused(format!(
                        "{e}; send append-entries frames of this version"
                    )),
                };
                let _ = frame::write_reply(&mut io, &refusal).await;
                return;
            }
        };
        let reply = match answer(&raft, request).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot answer an append-entries request");
                return;
            }
        };
        if let Err(e) = frame::write_reply(&mut io, &reply).await {
            tracing::debug!(%peer, error = %e, "append-entries link failed");
            return;
        }
    }
}

/// Answers one request: decodes it, appends through openraft, and encodes the result. A
/// request that cannot be decoded is refused with the reason and appends nothing; a result
/// that cannot be encoded is an error that ends the link.
async fn answer(raft: &Raft, request: LinkRequest) -> Result<LinkReply, crate::RaftError> {
    let seq = request.seq;
    let rpc: AppendEntriesRequest<TypeConfig> =
        match decode_payload("append-entries link request", &request.data) {
            Ok(rpc) => rpc,
            Err(e) => {
                return Ok(LinkReply {
                    seq,
                    answer: LinkAnswer::Refused(format!(
                        "{e}; send an encoded append-entries request of this version"
                    )),
                })
            }
        };
    let result = raft.append_entries(rpc).await;
    let data = encode_payload("append-entries link reply", &result)?;
    Ok(LinkReply {
        seq,
        answer: LinkAnswer::Result(data),
    })
}
