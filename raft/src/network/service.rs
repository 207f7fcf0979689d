//! The gRPC server side of replica-to-replica RPCs (vote, install-snapshot, timeout-now, and
//! unary append-entries from leaders without the link): decodes each payload, hands it to the
//! local `Raft`, and encodes openraft's result (success or openraft error) back. Undecodable
//! input is refused with InvalidArgument and reaches nothing. It must not touch storage
//! directly.

use super::{decode_payload, encode_payload};
use crate::server::transfer::campaign_on_request;
use crate::types::Raft;
use singularity_proto::v1::raft_service_server::RaftService;
use singularity_proto::v1::{RaftPayload, TimeoutNowReply, TimeoutNowRequest};
use tonic::{Request, Response, Status};

/// The tonic `RaftService` of one replica.
pub struct RaftGrpc {
    raft: Raft,
}

impl RaftGrpc {
    pub fn new(raft: Raft) -> RaftGrpc {
        RaftGrpc { raft }
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
}
