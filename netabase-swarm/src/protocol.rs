//! The Kademlia stream protocol: stream upgrades and length-prefixed frames, with the
//! core's [`Codec`] enforcing every size limit.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::core::UpgradeInfo;
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade};
use libp2p::{Stream, StreamProtocol};
use netabase_core::wire::Frame;
use netabase_core::{Codec, DecodeError, Request, Response};

/// Why a stream of the Kademlia protocol failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Reading or writing the stream failed.
    #[error("stream I/O: {0}")]
    Io(String),
    /// The peer closed the stream before a whole message arrived.
    #[error("the stream ended inside a message")]
    Truncated,
    /// The peer closed the stream without sending a message where one was expected.
    #[error("the stream ended without a message")]
    NoMessage,
    /// The bytes are not a valid message (or exceed a limit).
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    /// The peer took too long.
    #[error("the stream timed out")]
    Timeout,
    /// The connection holds too many streams of this protocol already.
    #[error("too many concurrent streams on one connection")]
    TooManyStreams,
    /// The connection closed while the stream was in use.
    #[error("the connection closed")]
    ConnectionClosed,
    /// The peer sent bytes where it should have closed the stream.
    #[error("unexpected data after a one-way message")]
    UnexpectedData,
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        StreamError::Io(e.to_string())
    }
}

/// The upgrade that negotiates the Kademlia protocol on a stream; `None` offers nothing
/// (client mode refuses inbound streams at negotiation, so peers see it does not serve
/// the protocol).
#[derive(Debug, Clone)]
pub(crate) struct KadUpgrade(pub(crate) Option<StreamProtocol>);

impl UpgradeInfo for KadUpgrade {
    type Info = StreamProtocol;
    type InfoIter = Option<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone()
    }
}

impl InboundUpgrade<Stream> for KadUpgrade {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_inbound(self, socket: Stream, _: StreamProtocol) -> Self::Future {
        ready(Ok(socket))
    }
}

impl OutboundUpgrade<Stream> for KadUpgrade {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_outbound(self, socket: Stream, _: StreamProtocol) -> Self::Future {
        ready(Ok(socket))
    }
}

/// Reads one length-prefixed frame. `Ok(None)`: the stream ended cleanly before the first
/// byte. The announced length is checked by the codec before the payload is read, so a
/// peer cannot make this allocate more than the codec's bound.
pub(crate) async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    codec: &Codec,
) -> Result<Option<Vec<u8>>, StreamError> {
    let mut prefix = [0u8; 10];
    let mut len = 0;
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return if len == 0 {
                Ok(None)
            } else {
                Err(StreamError::Truncated)
            };
        }
        prefix[len] = byte[0];
        len += 1;
        match codec.read_frame(&prefix[..len])? {
            Frame::Complete { payload, .. } => {
                // A zero-length message: the prefix alone is the frame.
                return Ok(Some(payload.to_vec()));
            }
            Frame::Incomplete {
                needed: Some(total),
            } => {
                let mut payload = vec![0u8; total - len];
                stream.read_exact(&mut payload).await.map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        StreamError::Truncated
                    } else {
                        StreamError::from(e)
                    }
                })?;
                return Ok(Some(payload));
            }
            Frame::Incomplete { needed: None } => {
                if len == prefix.len() {
                    return Err(StreamError::Decode(DecodeError::LengthPrefix));
                }
            }
        }
    }
}

/// Reads one request, with the size of its message in bytes.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    codec: &Codec,
) -> Result<(Request, usize), StreamError> {
    let payload = read_frame(stream, codec)
        .await?
        .ok_or(StreamError::NoMessage)?;
    Ok((codec.decode_request(&payload)?, payload.len()))
}

/// Writes `request`, closes the sending side, and reads the answer; for a request without
/// an answer (ADD_PROVIDER) waits for the peer to close the stream cleanly and returns
/// `None`.
pub(crate) async fn send_request<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    codec: Codec,
    request: Request,
) -> Result<Option<Response>, StreamError> {
    let bytes = codec.encode_request(&request);
    stream.write_all(&bytes).await?;
    stream.close().await?;
    if !request.expects_response() {
        // Stock Kademlia peers read the one message and close their side: a clean end
        // without further bytes is the acknowledgement that the message was taken.
        let mut rest = Vec::new();
        (&mut stream).take(1).read_to_end(&mut rest).await?;
        return if rest.is_empty() {
            Ok(None)
        } else {
            Err(StreamError::UnexpectedData)
        };
    }
    let payload = read_frame(&mut stream, &codec)
        .await?
        .ok_or(StreamError::NoMessage)?;
    Ok(Some(codec.decode_response(&payload)?))
}

/// Writes `response` (if any) and closes the stream.
pub(crate) async fn send_response<S: AsyncWrite + Unpin>(
    mut stream: S,
    codec: Codec,
    response: Option<Response>,
) -> Result<(), StreamError> {
    if let Some(response) = response {
        let bytes = codec.encode_response(&response);
        stream.write_all(&bytes).await?;
    }
    stream.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use netabase_core::RecordKey;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let codec = Codec::new(64);
        let request = Request::GetValue {
            key: RecordKey::new(b"k").unwrap(),
        };
        let bytes = codec.encode_request(&request);
        let mut cursor = Cursor::new(bytes);
        assert_eq!(
            block_on(read_request(&mut cursor, &codec)).map(|(r, _)| r),
            Ok(request)
        );
        // A prefix announcing more than the bound fails before reading the payload.
        let mut big = Cursor::new(vec![0x80, 0x01]);
        assert!(matches!(
            block_on(read_frame(&mut big, &codec)),
            Err(StreamError::Decode(DecodeError::TooLarge {
                size: 128,
                max: 64
            }))
        ));
        let mut truncated = Cursor::new(vec![5, 1, 2]);
        assert_eq!(
            block_on(read_frame(&mut truncated, &codec)),
            Err(StreamError::Truncated)
        );
        let mut empty = Cursor::new(Vec::new());
        assert_eq!(block_on(read_frame(&mut empty, &codec)), Ok(None));
        let mut endless = Cursor::new(vec![0xFF; 11]);
        assert!(block_on(read_frame(&mut endless, &Codec::new(usize::MAX))).is_err());
    }
}
