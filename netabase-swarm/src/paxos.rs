//! `/paxos/1.0.0`: consensus messages between cluster members.
//!
//! Each message is one request of libp2p's request-response protocol. The answer carries
//! the receiver's next message to the sender when it has one by the end of the step that
//! handled the request (an accept's vote, a heartbeat's acknowledgement), and is empty
//! otherwise, so that a vote costs no stream of its own. The core's member owns timeouts
//! and retries, so a lost or refused message is simply dropped. Requests and answers are
//! read up to the core's
//! [`MAX_MESSAGE_BYTES`](netabase_core::consensus::MAX_MESSAGE_BYTES) and no further: a
//! longer one fails the stream without being buffered.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, Codec, ProtocolSupport};
use netabase_core::consensus::MAX_MESSAGE_BYTES;

/// The protocol name, as the product description gives it.
pub const PAXOS_PROTOCOL: StreamProtocol = StreamProtocol::new(PAXOS_NAME);

/// The protocol name as text.
pub(crate) const PAXOS_NAME: &str = "/paxos/1.0.0";

/// Streams of `/paxos/1.0.0` open at once per connection.
const MAX_CONCURRENT_STREAMS: usize = 256;

/// The bytes of one consensus message each way (an empty answer carries none).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PaxosCodec;

impl Codec for PaxosCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&request).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&response).await?;
        io.close().await
    }
}

/// Reads a whole message, refusing one longer than the limit.
async fn read_bounded<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io.take(MAX_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "consensus message exceeds the size limit",
        ));
    }
    Ok(bytes)
}

/// The request-response behaviour that carries `/paxos/1.0.0`.
pub(crate) fn behaviour() -> request_response::Behaviour<PaxosCodec> {
    behaviour_for(PAXOS_PROTOCOL)
}

/// A request-response behaviour carrying whole messages of up to the consensus size limit
/// on `protocol` (the paxakos engine's uses it too).
pub(crate) fn behaviour_for(protocol: StreamProtocol) -> request_response::Behaviour<PaxosCodec> {
    request_response::Behaviour::with_codec(
        PaxosCodec,
        [(protocol, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_up_to_the_limit_and_no_further() {
        futures::executor::block_on(async {
            let mut codec = PaxosCodec;
            let ok = vec![7u8; 1000];
            let got = codec
                .read_request(&PAXOS_PROTOCOL, &mut ok.as_slice())
                .await
                .unwrap();
            assert_eq!(got, ok);
            let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
            let err = codec
                .read_request(&PAXOS_PROTOCOL, &mut huge.as_slice())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        });
    }
}
