//! The server side of replica-to-replica RPCs: decodes each payload, hands it to the local
//! `Raft`, and encodes openraft's result (success or openraft error) back. Undecodable input
//! is refused (InvalidArgument for a unary call, a `refused` reply for a message of the
//! append-entries stream) and reaches nothing. A stream's messages are handled strictly in
//! order, one at a time, and every open stream ends when the replica shuts down. It must not
//! touch storage directly.

use super::{decode_payload, encode_payload};
use crate::server::transfer::campaign_on_request;
use crate::types::{Raft, TypeConfig};
use futures::Stream;
use openraft::raft::AppendEntriesRequest;
use singularity_proto::v1::raft_service_server::RaftService;
use singularity_proto::v1::raft_stream_reply::Result as StreamResult;
use singularity_proto::v1::{
    RaftPayload, RaftStreamReply, RaftStreamRequest, TimeoutNowReply, TimeoutNowRequest,
};
use std::pin::Pin;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// The tonic `RaftService` of one replica.
pub struct RaftGrpc {
    raft: Raft,
    /// Becomes `true` when the replica shuts down: open append-entries streams end then.
    stopping: watch::Receiver<bool>,
}

impl RaftGrpc {
    /// `stopping` turns `true` when the replica shuts down (the server's graceful shutdown
    /// waits for open streams, so they must end on their own).
    pub fn new(raft: Raft, stopping: watch::Receiver<bool>) -> RaftGrpc {
        RaftGrpc { raft, stopping }
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    request: Request<RaftPayload>,
) -> Result<T, Status> {
    decode_payload(what, &request.into_inner().data)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Response<RaftPayload>, Status> {
    let data = encode_payload(what, value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload { data }))
}

/// The reply stream of one append-entries stream.
pub type AppendStreamReplies = Pin<Box<dyn Stream<Item = Result<RaftStreamReply, Status>> + Send>>;

/// What one append-entries stream holds between its messages.
struct StreamState {
    raft: Raft,
    requests: Streaming<RaftStreamRequest>,
    stopping: watch::Receiver<bool>,
    /// Set after a failure (of the request stream, or an internal one): the error was sent,
    /// the stream ends next.
    failed: bool,
}

/// Handles one message of the stream: decodes it, appends through openraft, and encodes the
/// result. A message that cannot be decoded is refused with the reason and appends nothing; a
/// result that cannot be encoded is an internal error that ends the stream.
async fn handle_stream_request(
    raft: &Raft,
    request: RaftStreamRequest,
) -> Result<RaftStreamReply, Status> {
    let seq = request.seq;
    let rpc: AppendEntriesRequest<TypeConfig> =
        match decode_payload("append-entries stream request", &request.data) {
            Ok(rpc) => rpc,
            Err(e) => {
                return Ok(RaftStreamReply {
                    seq,
                    result: Some(StreamResult::Refused(format!(
                        "{e}; send an encoded append-entries request of this version"
                    ))),
                })
            }
        };
    let result = raft.append_entries(rpc).await;
    let data = encode_payload("append-entries stream reply", &result)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftStreamReply {
        seq,
        result: Some(StreamResult::Data(data)),
    })
}

/// The next reply of a stream, or `None` when it ends (the peer closed its side, the request
/// stream failed, or the replica is shutting down).
async fn next_reply(
    mut state: StreamState,
) -> Option<(Result<RaftStreamReply, Status>, StreamState)> {
    if state.failed || *state.stopping.borrow() {
        return None;
    }
    let message = tokio::select! {
        biased;
        _ = state.stopping.wait_for(|stopping| *stopping) => return None,
        message = state.requests.message() => message,
    };
    match message {
        Ok(Some(request)) => {
            let reply = handle_stream_request(&state.raft, request).await;
            state.failed = reply.is_err();
            Some((reply, state))
        }
        Ok(None) => None,
        // An oversized or unframeable message: tonic's status names the problem; the stream
        // cannot go on after it.
        Err(status) => {
            state.failed = true;
            Some((Err(status), state))
        }
    }
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode("append-entries request", request)?;
        let result = self.raft.append_entries(rpc).await;
        reply("append-entries reply", &result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode("vote request", request)?;
        let result = self.raft.vote(rpc).await;
        reply("vote reply", &result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode("install-snapshot request", request)?;
        let result = self.raft.install_snapshot(rpc).await;
        reply("install-snapshot reply", &result)
    }

    async fn timeout_now(
        &self,
        request: Request<TimeoutNowRequest>,
    ) -> Result<Response<TimeoutNowReply>, Status> {
        campaign_on_request(&self.raft, &request.into_inner()).await?;
        Ok(Response::new(TimeoutNowReply {}))
    }

    type AppendEntriesStreamStream = AppendStreamReplies;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftStreamRequest>>,
    ) -> Result<Response<AppendStreamReplies>, Status> {
        if *self.stopping.borrow() {
            return Err(Status::unavailable("this replica is shutting down"));
        }
        let state = StreamState {
            raft: self.raft.clone(),
            requests: request.into_inner(),
            stopping: self.stopping.clone(),
            failed: false,
        };
        // The reply stream pulls the next request only after the previous reply was taken:
        // strictly one message at a time, in order.
        let replies = futures::stream::unfold(state, next_reply);
        Ok(Response::new(Box::pin(replies)))
    }
}
