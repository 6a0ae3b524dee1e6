//! Body faults shared by the in-process fakes ([`super::fake_npm`], [`super::fake_oci`],
//! [`super::fake_maven`]): a streamed body that can be truncated, stalled, paused until
//! released, or slowed down, and the pause/release gate behind [`BodyFault::PauseAfter`].
//! Each fake keeps its own public `Fault` enum and maps its body-affecting variants here.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::sync::watch;

/// What happens to a streamed body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum BodyFault {
    #[default]
    None,
    /// Send only the first n bytes, then fail the body.
    Truncate(usize),
    /// Send `after` bytes, then neither send nor close.
    Stall { after: usize },
    /// Send `bytes` bytes, then wait for [`Pause::release`].
    PauseAfter { bytes: usize },
    /// Send `chunk` bytes per frame, waiting `interval` between frames.
    SlowDrip { chunk: usize, interval: Duration },
}

/// Gate for [`BodyFault::PauseAfter`]: counts the bodies waiting at their pause point and
/// lets them all continue at once.
pub(crate) struct Pause {
    paused: watch::Sender<usize>,
    release: watch::Sender<u64>,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            paused: watch::Sender::new(0),
            release: watch::Sender::new(0),
        }
    }
}

impl Pause {
    /// Let every body currently waiting continue.
    pub(crate) fn release(&self) {
        self.release.send_modify(|g| *g += 1);
    }

    /// Number of bodies currently waiting.
    pub(crate) fn waiters(&self) -> usize {
        *self.paused.borrow()
    }

    /// Wait until at least one body is waiting at its pause point.
    pub(crate) async fn wait_paused(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    /// Wait (counted as a waiter) until the next [`Self::release`].
    async fn wait_release(&self) {
        struct Waiting<'a>(&'a watch::Sender<usize>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n -= 1);
            }
        }
        let mut release = self.release.subscribe();
        self.paused.send_modify(|n| *n += 1);
        let _waiting = Waiting(&self.paused);
        let _ = release.changed().await;
    }
}

struct Drip {
    data: Bytes,
    pos: usize,
    fault: BodyFault,
    chunk: usize,
    label: &'static str,
    pause: Arc<Pause>,
    bytes_sent: Arc<AtomicU64>,
    paused: bool,
    failed: bool,
}

/// Streamed body of `data` in `chunk`-byte frames, applying `fault`. Every byte sent is
/// added to `bytes_sent`; `label` (e.g. `fake_npm`) prefixes the truncation error.
pub(crate) fn drip(
    data: Bytes,
    fault: BodyFault,
    chunk: usize,
    label: &'static str,
    pause: Arc<Pause>,
    bytes_sent: Arc<AtomicU64>,
) -> UnsyncBoxBody<Bytes, io::Error> {
    let drip = Drip {
        data,
        pos: 0,
        fault,
        chunk,
        label,
        pause,
        bytes_sent,
        paused: false,
        failed: false,
    };
    let frames = stream::unfold(drip, |mut d| async move {
        if d.failed || d.pos >= d.data.len() {
            return None;
        }
        let mut chunk = d.chunk;
        match d.fault {
            BodyFault::Truncate(n) if d.pos >= n => {
                // Let hyper flush what it buffered before the connection is aborted.
                tokio::time::sleep(Duration::from_millis(100)).await;
                d.failed = true;
                let err = io::Error::other(format!("{}: injected truncation", d.label));
                return Some((Err(err), d));
            }
            BodyFault::Truncate(n) => chunk = chunk.min(n - d.pos),
            BodyFault::Stall { after } if d.pos >= after => std::future::pending::<()>().await,
            BodyFault::Stall { after } => chunk = chunk.min(after - d.pos),
            BodyFault::PauseAfter { bytes } if !d.paused && d.pos >= bytes => {
                d.pause.wait_release().await;
                d.paused = true;
            }
            BodyFault::PauseAfter { bytes } if !d.paused => chunk = chunk.min(bytes - d.pos),
            BodyFault::SlowDrip { chunk: c, interval } => {
                chunk = c.max(1);
                if d.pos > 0 {
                    tokio::time::sleep(interval).await;
                }
            }
            _ => {}
        }
        let end = (d.pos + chunk).min(d.data.len());
        let frame = d.data.slice(d.pos..end);
        d.pos = end;
        d.bytes_sent
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        Some((Ok(Frame::data(frame)), d))
    });
    StreamBody::new(frames).boxed_unsync()
}
