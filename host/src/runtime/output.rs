//! Guest stdout/stderr: forwarded to the host log, labelled with group and consumer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// An `AsyncWrite` that logs every write as one line of the guest's output.
pub(crate) struct LogWriter {
    pub(crate) label: Arc<str>,
    pub(crate) stream: &'static str,
}

impl AsyncWrite for LogWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Bounded, so a chatty guest cannot flood the log with one huge line.
        let shown = &buf[..buf.len().min(4096)];
        let text = String::from_utf8_lossy(shown);
        let text = text.trim_end();
        if !text.is_empty() {
            tracing::info!(target: "beehive::guest", consumer = %self.label, stream = self.stream, "{text}");
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
