//! The upstream's HTTP/2 stream limit, read from the SETTINGS frames it sends.
//!
//! hyper's client sends every request on one HTTP/2 connection and, past the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`, queues the excess until a stream ends: a request
//! then waits for the response timeout (a 504 that burns its replay record) instead of
//! getting a quick 503 `upstream_busy`. hyper does not expose the peer's settings, so
//! the connector wraps each upstream connection in [`SettingsReader`], which follows
//! the frame boundaries of what the server sends (nine bytes of header per frame, no
//! other state) and keeps the last announced limit in a shared [`PeerStreamLimit`].

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// The `SETTINGS_MAX_CONCURRENT_STREAMS` the upstream last announced, on any of its
/// connections; `u32::MAX` until one is announced (RFC 9113 section 6.5.2: no limit).
#[derive(Clone, Debug)]
pub struct PeerStreamLimit(Arc<AtomicU32>);

impl Default for PeerStreamLimit {
    fn default() -> Self {
        PeerStreamLimit(Arc::new(AtomicU32::new(u32::MAX)))
    }
}

impl PeerStreamLimit {
    /// Streams the upstream accepts at once on one connection, as last announced.
    pub fn get(&self) -> usize {
        usize::try_from(self.0.load(Ordering::Acquire)).unwrap_or(usize::MAX)
    }

    fn set(&self, value: u32) {
        self.0.store(value, Ordering::Release);
    }
}

/// Wraps the connections of `inner` in a [`SettingsReader`] when `limit` is given (the
/// upstream speaks HTTP/2); passes them through otherwise.
#[derive(Clone, Debug)]
pub struct ReadSettings<C> {
    /// The connector.
    pub inner: C,
    /// Where the announced limit goes; `None` for HTTP/1.1 upstreams.
    pub limit: Option<PeerStreamLimit>,
}

impl<C> tower::Service<http::Uri> for ReadSettings<C>
where
    C: tower::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = SettingsReader<C::Response>;
    type Error = C::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<SettingsReader<C::Response>, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let limit = self.limit.clone();
        Box::pin(async move {
            let io = connecting.await?;
            Ok(SettingsReader {
                io,
                scratch: match limit {
                    Some(_) => vec![0; SCRATCH].into_boxed_slice(),
                    None => Box::new([]),
                },
                frames: limit.map(|limit| Frames {
                    limit,
                    header: [0; FRAME_HEADER],
                    have: 0,
                    left: 0,
                    settings: false,
                    entry: [0; SETTING],
                    entry_have: 0,
                }),
            })
        })
    }
}

/// The size of an HTTP/2 frame header, and of one SETTINGS entry (RFC 9113 section 4.1
/// and 6.5.1).
const FRAME_HEADER: usize = 9;
const SETTING: usize = 6;
const TYPE_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// Bytes read from the upstream at once through a reader (hyper's HTTP/2 reads are of
/// this order).
const SCRATCH: usize = 16 * 1024;

/// Where the reader is in the server's frame sequence.
struct Frames {
    limit: PeerStreamLimit,
    header: [u8; FRAME_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The current payload is that of a SETTINGS frame (not an acknowledgement).
    settings: bool,
    entry: [u8; SETTING],
    entry_have: usize,
}

impl Frames {
    /// Follows `bytes`, the next bytes the server sent.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left == 0 {
                let n = (FRAME_HEADER - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == FRAME_HEADER {
                    let h = self.header;
                    self.have = 0;
                    self.left =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    self.settings = h[3] == TYPE_SETTINGS && h[4] & FLAG_ACK == 0;
                    self.entry_have = 0;
                }
                continue;
            }
            let n = self.left.min(bytes.len());
            if self.settings {
                for &b in &bytes[..n] {
                    self.entry[self.entry_have] = b;
                    self.entry_have += 1;
                    if self.entry_have == SETTING {
                        self.entry_have = 0;
                        let e = self.entry;
                        if u16::from_be_bytes([e[0], e[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS {
                            self.limit.set(u32::from_be_bytes([e[2], e[3], e[4], e[5]]));
                        }
                    }
                }
            }
            self.left -= n;
            bytes = &bytes[n..];
        }
    }
}

/// An upstream connection whose incoming HTTP/2 frames are followed for SETTINGS.
pub struct SettingsReader<T> {
    io: T,
    frames: Option<Frames>,
    /// What one read returns, before it is handed on (empty without `frames`).
    scratch: Box<[u8]>,
}

impl<T: Read + Unpin> Read for SettingsReader<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let Some(frames) = &mut this.frames else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        let n = buf.remaining().min(this.scratch.len());
        let mut read = ReadBuf::new(&mut this.scratch[..n]);
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, read.unfilled()))?;
        let filled = read.filled();
        buf.put_slice(filled);
        frames.feed(filled);
        Poll::Ready(Ok(()))
    }
}

impl<T: Write + Unpin> Write for SettingsReader<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for SettingsReader<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Frames {
        Frames {
            limit: PeerStreamLimit::default(),
            header: [0; FRAME_HEADER],
            have: 0,
            left: 0,
            settings: false,
            entry: [0; SETTING],
            entry_have: 0,
        }
    }

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len().to_be_bytes();
        let mut f = vec![len[5], len[6], len[7], kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_last_announced_stream_limit_is_kept_whatever_the_read_sizes() {
        let mut bytes = Vec::new();
        // SETTINGS: header table size 4096, max concurrent streams 2.
        bytes.extend(frame(4, 0, &[0, 1, 0, 0, 16, 0, 0, 3, 0, 0, 0, 2]));
        // A DATA frame whose payload looks like a SETTINGS entry: not read as one.
        bytes.extend(frame(0, 0, &[0, 3, 0, 0, 0, 9]));
        // A SETTINGS acknowledgement (empty), a PING.
        bytes.extend(frame(4, 1, &[]));
        bytes.extend(frame(6, 0, &[0; 8]));
        for split in [1, 2, 5, 9, 13, bytes.len()] {
            let mut f = frames();
            for chunk in bytes.chunks(split) {
                f.feed(chunk);
            }
            assert_eq!(f.limit.get(), 2, "reads of {split} bytes");
            f.feed(&frame(4, 0, &[0, 3, 0, 0, 0, 7]));
            assert_eq!(f.limit.get(), 7);
        }
        assert_eq!(frames().limit.get(), u32::MAX as usize);
    }
}
