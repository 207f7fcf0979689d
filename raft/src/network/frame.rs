//! The wire format of the append-entries link: a plain TCP connection between a leader and a
//! follower that carries only append-entries requests and their replies, without HTTP/2.
//!
//! A link opens with `PREFACE` from the leader, echoed by the follower (a replica that does not
//! know it answers with HTTP/2 or closes). Then each message is one frame: a 4-byte big-endian
//! body length, then the body: an 8-byte big-endian sequence number, a 1-byte kind, and the
//! payload (openraft's bincode-encoded request or result, or a refusal's UTF-8 reason). Bodies
//! are bounded by `MAX_FRAME_BODY_BYTES`. It must not interpret payloads.

use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a leader sends first on a new link, and what a follower that serves links echoes. Its
/// first byte is not the first byte of HTTP/2's preface (`P`), so one byte tells them apart;
/// it is as long as HTTP/2's preface, so an HTTP/2-only server (an older replica) reads all of
/// it and refuses it at once instead of waiting for more.
pub const PREFACE: &[u8; 24] = b"SGRAFT-APPEND-LINK/1\r\n\r\n";
const _: () = assert!(PREFACE[0] != b'P');

/// Bytes of a frame's body before its payload: the sequence number and the kind.
const BODY_HEADER_BYTES: usize = 8 + 1;
/// The largest frame body either side accepts: a gRPC message's worth of payload.
pub const MAX_FRAME_BODY_BYTES: usize = MAX_GRPC_MESSAGE_BYTES + BODY_HEADER_BYTES;

/// The kind of an append-entries request.
const KIND_APPEND: u8 = 0;
/// The kind of a reply carrying openraft's encoded result.
const KIND_RESULT: u8 = 1;
/// The kind of a reply refusing the request, with the reason.
const KIND_REFUSED: u8 = 2;

/// One append-entries request on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    /// Chosen by the leader, increasing on its link; the reply carries it back.
    pub seq: u64,
    /// openraft's encoded append-entries request.
    pub data: Vec<u8>,
}

/// What a follower answers to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAnswer {
    /// openraft's encoded result.
    Result(Vec<u8>),
    /// The request was refused before it reached Raft (malformed, or too large): why, and what
    /// to fix. Nothing was appended.
    Refused(String),
}

/// One reply on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReply {
    /// The `seq` of the request this answers (0 for a frame that could not be read).
    pub seq: u64,
    pub answer: LinkAnswer,
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The connection failed, or ended inside a frame.
    Io(std::io::Error),
    /// The frame announces a body over the limit (its body is not read).
    TooLarge { body_bytes: usize },
    /// The body is too short for its header, or its kind is unknown here.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::TooLarge { body_bytes } => write!(
                f,
                "a frame of {body_bytes} bytes is over the {MAX_FRAME_BODY_BYTES}-byte limit"
            ),
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> FrameError {
        FrameError::Io(e)
    }
}

/// Payloads up to this size are copied behind their header and written in one system call;
/// larger ones are written after it without the copy.
const COPIED_PAYLOAD_BYTES: usize = 64 * 1024;

/// Writes one frame.
async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    seq: u64,
    kind: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let body_bytes = BODY_HEADER_BYTES + payload.len();
    assert!(
        body_bytes <= MAX_FRAME_BODY_BYTES,
        "callers bound payloads by the gRPC message limit"
    );
    let copied = if payload.len() <= COPIED_PAYLOAD_BYTES {
        payload.len()
    } else {
        0
    };
    let mut frame = Vec::with_capacity(4 + BODY_HEADER_BYTES + copied);
    frame.extend_from_slice(&(body_bytes as u32).to_be_bytes());
    frame.extend_from_slice(&seq.to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(&payload[..copied]);
    io.write_all(&frame).await?;
    io.write_all(&payload[copied..]).await?;
    io.flush().await
}

/// Reads one frame: `None` if the connection ended cleanly before it.
async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<(u64, u8, Vec<u8>)>, FrameError> {
    let mut length = [0u8; 4];
    match io.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let body_bytes = u32::from_be_bytes(length) as usize;
    if body_bytes > MAX_FRAME_BODY_BYTES {
        return Err(FrameError::TooLarge { body_bytes });
    }
    if body_bytes < BODY_HEADER_BYTES {
        return Err(FrameError::Malformed(format!(
            "a body of {body_bytes} bytes is shorter than its {BODY_HEADER_BYTES}-byte header"
        )));
    }
    let mut header = [0u8; BODY_HEADER_BYTES];
    io.read_exact(&mut header).await?;
    let seq = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
    let kind = header[8];
    let mut payload = vec![0u8; body_bytes - BODY_HEADER_BYTES];
    io.read_exact(&mut payload).await?;
    Ok(Some((seq, kind, payload)))
}

/// Writes an append-entries request.
pub async fn write_request<W: AsyncWrite + Unpin>(
    io: &mut W,
    request: &LinkRequest,
) -> std::io::Result<()> {
    write_frame(io, request.seq, KIND_APPEND, &request.data).await
}

/// Reads an append-entries request: `None` if the leader closed the link.
pub async fn read_request<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<LinkRequest>, FrameError> {
    match read_frame(io).await? {
        None => Ok(None),
        Some((seq, KIND_APPEND, data)) => Ok(Some(LinkRequest { seq, data })),
        Some((_, kind, _)) => Err(FrameError::Malformed(format!(
            "kind {kind} is not an append-entries request"
        ))),
    }
}

/// Writes a reply.
pub async fn write_reply<W: AsyncWrite + Unpin>(
    io: &mut W,
    reply: &LinkReply,
) -> std::io::Result<()> {
    match &reply.answer {
        LinkAnswer::Result(data) => write_frame(io, reply.seq, KIND_RESULT, data).await,
        LinkAnswer::Refused(why) => write_frame(io, reply.seq, KIND_REFUSED, why.as_bytes()).await,
    }
}

/// Reads a reply: `None` if the follower closed the link.
pub async fn read_reply<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<LinkReply>, FrameError> {
    let Some((seq, kind, payload)) = read_frame(io).await? else {
        return Ok(None);
    };
    let answer = match kind {
        KIND_RESULT => LinkAnswer::Result(payload),
        KIND_REFUSED => LinkAnswer::Refused(String::from_utf8_lossy(&payload).into_owned()),
        other => {
            return Err(FrameError::Malformed(format!(
                "kind {other} is not a reply"
            )))
        }
    };
    Ok(Some(LinkReply { seq, answer }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_and_replies_round_trip_and_a_clean_end_reads_as_none() {
        let mut wire = Vec::new();
        let request = LinkRequest {
            seq: 7,
            data: vec![1, 2, 3],
        };
        write_request(&mut wire, &request).await.unwrap();
        let refused = LinkReply {
            seq: 7,
            answer: LinkAnswer::Refused("bad".into()),
        };
        write_reply(&mut wire, &refused).await.unwrap();
        let mut reader = wire.as_slice();
        assert_eq!(read_request(&mut reader).await.unwrap(), Some(request));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Some(refused));
        assert!(read_reply(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_short_truncated_and_mistyped_frames_are_errors() {
        let oversized = ((MAX_FRAME_BODY_BYTES + 1) as u32).to_be_bytes();
        let error = read_request(&mut oversized.as_slice()).await.unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { .. }), "{error}");
        assert!(error.to_string().contains("limit"), "{error}");

        let short = 3u32.to_be_bytes();
        let error = read_request(&mut short.as_slice()).await.unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error}");

        let mut truncated = Vec::new();
        write_request(
            &mut truncated,
            &LinkRequest {
                seq: 1,
                data: vec![0; 10],
            },
        )
        .await
        .unwrap();
        truncated.truncate(truncated.len() - 1);
        let error = read_request(&mut truncated.as_slice()).await.unwrap_err();
        assert!(matches!(error, FrameError::Io(_)), "{error}");

        let mut reply = Vec::new();
        write_reply(
            &mut reply,
            &LinkReply {
                seq: 1,
                answer: LinkAnswer::Result(vec![9]),
            },
        )
        .await
        .unwrap();
        let error = read_request(&mut reply.as_slice()).await.unwrap_err();
        assert!(
            error.to_string().contains("not an append-entries request"),
            "{error}"
        );
    }
}
