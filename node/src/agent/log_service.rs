//! The agent's `Agent` gRPC service: `ReadLogs` streams one rank's stdout or stderr file from
//! the work directory, and with `follow` keeps sending what is appended until no rank of the job
//! runs here any more. `singularity job logs` asks every agent the control plane knows.
//!
//! It must only read log files; it must not change any state.

use super::supervisor::Supervisor;
use singularity_proto::v1::agent_server::Agent;
use singularity_proto::v1::{LogChunk, ReadLogsRequest};
use singularity_scheduler::JobId;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// Bytes per streamed chunk.
const LOG_CHUNK_BYTES: usize = 64 * 1024;
/// How often a followed file is checked for new bytes.
const FOLLOW_POLL_MS: u64 = 100;

/// Serves the logs of this node's ranks.
pub struct LogService {
    supervisor: Arc<Supervisor>,
}

impl LogService {
    pub fn new(supervisor: Arc<Supervisor>) -> Self {
        LogService { supervisor }
    }
}

type ChunkStream = Pin<Box<dyn futures::Stream<Item = Result<LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for LogService {
    type ReadLogsStream = ChunkStream;

    async fn read_logs(
        &self,
        request: Request<ReadLogsRequest>,
    ) -> Result<Response<Self::ReadLogsStream>, Status> {
        let request = request.into_inner();
        let job = JobId(request.job_id);
        let path = self
            .supervisor
            .work
            .log_path(job, request.rank, request.stderr);
        let mut file = tokio::fs::File::open(&path).await.map_err(|_| {
            Status::not_found(format!(
                "node {} has no logs of {job} rank {}",
                self.supervisor.config.node, request.rank
            ))
        })?;
        let (tx, rx) = mpsc::channel::<Result<LogChunk, Status>>(8);
        let supervisor = self.supervisor.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; LOG_CHUNK_BYTES];
            loop {
                let read = match file.read(&mut buffer).await {
                    Ok(read) => read,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading the log: {e}"))))
                            .await;
                        return;
                    }
                };
                if read > 0 {
                    let chunk = LogChunk {
                        data: buffer[..read].to_vec(),
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    continue;
                }
                // At the end of the file: done, unless following a job whose ranks still run
                // here (one more read after they stop picks up their last words).
                if !request.follow {
                    return;
                }
                let running = supervisor.is_running(job);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(FOLLOW_POLL_MS)) => {}
                    _ = tx.closed() => return,
                }
                if !running {
                    match file.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => {
                            let chunk = LogChunk {
                                data: buffer[..read].to_vec(),
                            };
                            if tx.send(Ok(chunk)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
