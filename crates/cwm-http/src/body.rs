//! Reading request bodies: a size limit detected while streaming, an idle timeout between bytes,
//! and draining what an early answer left unread so that the client still reads the answer.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;

use http::{Response, StatusCode};

use crate::RequestBody;
use crate::response::{self, Body};

/// The `Content-Length` the client declared, if any.
pub(crate) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why a body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// More than the limit arrived.
    TooLarge,
    /// No byte arrived within the idle timeout.
    Timeout,
    /// The connection failed or the framing was invalid.
    Failed,
}

impl ReadError {
    /// The answer to a body that could not be read: 413 (`too_large`), 408 or 400. The rest of
    /// the body is unread, so the connection closes after it.
    pub(crate) fn answer(self, too_large: Response<Body>) -> Response<Body> {
        let mut r = match self {
            Self::TooLarge => too_large,
            Self::Timeout => response::detail(StatusCode::REQUEST_TIMEOUT, "Request body timeout"),
            Self::Failed => {
                response::detail(StatusCode::BAD_REQUEST, "Failed to read request body")
            }
        };
        crate::close_after(&mut r);
        r
    }
}

/// Read the whole body, at most `max` bytes, waiting at most `idle` for each chunk.
///
/// A body that arrives in one chunk (the common case for small webhooks) is returned without a
/// copy.
pub(crate) async fn read<B: RequestBody>(
    body: B,
    max: usize,
    idle: Duration,
) -> Result<Bytes, ReadError> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut len = 0usize;
    while !body.is_end_stream() {
        let frame = match within(idle, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e.into(), "request body could not be read");
                return Err(ReadError::Failed);
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > max {
            return Err(ReadError::TooLarge);
        }
        match (&mut first, &mut rest) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(f.len() + data.len());
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

/// `fut`, or `Err` when it is not done within `idle`. A future that is ready at once (a body that
/// arrived with its head, the common case) costs no timer and no clock read.
async fn within<F: Future>(
    idle: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(out);
    }
    tokio::time::timeout(idle, fut).await
}

/// Read and discard the rest of a body the answer did not need, at most `max` bytes and waiting
/// at most `idle` for each chunk. `true` when the body ended, so the connection can be kept.
pub(crate) async fn drain<B: RequestBody>(body: B, max: usize, idle: Duration) -> bool {
    let mut body = std::pin::pin!(body);
    let mut len = 0usize;
    loop {
        if body.is_end_stream() {
            return true;
        }
        match within(idle, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    len += data.len();
                    if len > max {
                        return false;
                    }
                }
            }
            Err(_) | Ok(Some(Err(_))) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::Full;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body of the given chunks; `None` stands for a pause that never ends.
    struct Chunks(VecDeque<Option<&'static [u8]>>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Some(c)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(c))))),
                Some(None) => {
                    self.0.push_front(None);
                    Poll::Pending
                }
            }
        }
    }

    fn chunks(parts: &[Option<&'static [u8]>]) -> Chunks {
        Chunks(parts.iter().copied().collect())
    }

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn reads_one_chunk_without_copy_and_many_chunks_joined() {
        let one = Bytes::from_static(b"{\"a\":1}");
        let got = read(Full::new(one.clone()), 100, SEC).await.unwrap();
        assert_eq!(got.as_ptr(), one.as_ptr(), "a single chunk is not copied");
        let got = read(chunks(&[Some(b"ab"), Some(b"cd"), Some(b"e")]), 100, SEC)
            .await
            .unwrap();
        assert_eq!(&got[..], b"abcde");
        assert_eq!(
            read(chunks(&[Some(b"abc"), Some(b"def")]), 5, SEC).await,
            Err(ReadError::TooLarge)
        );
        assert_eq!(read(chunks(&[]), 5, SEC).await, Ok(Bytes::new()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_between_bytes_times_out() {
        assert_eq!(
            read(chunks(&[Some(b"ab"), None]), 100, SEC).await,
            Err(ReadError::Timeout)
        );
        assert!(!drain(chunks(&[Some(b"ab"), None]), 100, SEC).await);
    }

    #[tokio::test]
    async fn drain_keeps_the_connection_only_when_the_body_ended_within_the_bound() {
        assert!(drain(chunks(&[Some(b"abc"), Some(b"def")]), 6, SEC).await);
        assert!(!drain(chunks(&[Some(b"abc"), Some(b"def")]), 5, SEC).await);
    }
}
