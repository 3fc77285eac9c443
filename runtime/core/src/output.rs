//! Capture of a guest's stdout and stderr: kept in memory up to a cap, the
//! rest counted and dropped. Writes never fail and never block, so a chatty
//! or hostile tool can neither crash itself on a full pipe nor reach the
//! host's own stdout (which may carry a protocol stream).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How much a guest may write per `check-write` permit.
const WRITE_BUDGET: usize = 64 * 1024;

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: usize,
}

/// A capped in-memory capture of one output stream.
#[derive(Clone)]
pub struct CapturedOutput {
    cap: usize,
    inner: Arc<Mutex<Captured>>,
}

impl CapturedOutput {
    /// Keep at most `cap` bytes.
    pub fn new(cap: usize) -> CapturedOutput {
        CapturedOutput {
            cap,
            inner: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap();
        let room = self.cap.saturating_sub(inner.kept.len());
        let keep = bytes.len().min(room);
        inner.kept.extend_from_slice(&bytes[..keep]);
        inner.dropped += bytes.len() - keep;
    }

    /// What was kept, as text, with a note of how much was dropped.
    pub fn text(&self) -> String {
        let inner = self.inner.lock().unwrap();
        let mut text = String::from_utf8_lossy(&inner.kept).into_owned();
        if inner.dropped > 0 {
            text.push_str(&format!(
                "\n[agentcap: {} more bytes of output dropped]\n",
                inner.dropped
            ));
        }
        text
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let out = CapturedOutput::new(5);
        out.push(b"hello world");
        out.push(b"!");
        assert_eq!(
            out.text(),
            "hello\n[agentcap: 7 more bytes of output dropped]\n"
        );
    }
}
