//! The access log writer. Requests hand their entries to one writer task,
//! which commits whatever has queued up in one statement or transaction
//! (group commit), so the log keeps up with many readers on one SQLite
//! writer.
//!
//! Two modes (`server.access_log` in folkhub.toml):
//! - [`Mode::BeforeAnswer`] (the default): a request waits until its
//!   entries are committed; no log entry, no answer.
//! - [`Mode::Buffered`]: a request queues its entries and answers at once;
//!   the writer commits them within milliseconds, and a graceful shutdown
//!   commits what is queued ([`AccessLog::flush`]). A crash can lose the
//!   reads of the last group. After a failed commit every request is
//!   refused until a commit succeeds again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use folkhub_store::{Access, AccessEntry};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

type Job = (
    Vec<AccessEntry>,
    Option<oneshot::Sender<Result<(), String>>>,
);

/// When a request's entries must be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    BeforeAnswer,
    Buffered,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "before-answer" => Some(Mode::BeforeAnswer),
            "buffered" => Some(Mode::Buffered),
            _ => None,
        }
    }
}

/// A handle to the writer; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    queue: mpsc::UnboundedSender<Job>,
    mode: Mode,
    /// The last commit failed (buffered mode refuses requests then).
    failing: Arc<AtomicBool>,
}

/// The most entries one group takes.
const GROUP: usize = 5_000;

impl AccessLog {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: Arc<dyn Access>, metrics: Arc<Metrics>, mode: Mode) -> AccessLog {
        let (queue, mut jobs) = mpsc::unbounded_channel::<Job>();
        let failing = Arc::new(AtomicBool::new(false));
        let failed = failing.clone();
        tokio::spawn(async move {
            while let Some(first) = jobs.recv().await {
                let mut group = vec![first];
                let mut count = group[0].0.len();
                while count < GROUP {
                    match jobs.try_recv() {
                        Ok(job) => {
                            count += job.0.len();
                            group.push(job);
                        }
                        Err(_) => break,
                    }
                }
                let entries: Vec<AccessEntry> =
                    group.iter().flat_map(|(e, _)| e.iter().cloned()).collect();
                let result = store.log_access(&entries).await.map_err(|e| e.to_string());
                match &result {
                    Ok(()) => metrics.logged(entries.len()),
                    Err(e) => {
                        tracing::error!("access log: {} entries not written: {e}", entries.len());
                        metrics.log_failed(entries.len());
                    }
                }
                failed.store(result.is_err(), Ordering::Relaxed);
                for (_, done) in group {
                    if let Some(done) = done {
                        let _ = done.send(result.clone());
                    }
                }
            }
        });
        AccessLog {
            queue,
            mode,
            failing,
        }
    }

    /// Writes entries: waits for their commit, or (buffered) queues them.
    pub async fn write(&self, entries: Vec<AccessEntry>) -> Result<(), String> {
        if self.mode == Mode::Buffered {
            if self.failing.load(Ordering::Relaxed) {
                return Err("the last access-log commit failed".into());
            }
            if entries.is_empty() {
                return Ok(());
            }
            return self
                .queue
                .send((entries, None))
                .map_err(|_| "the access log writer has stopped".to_string());
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.committed(entries).await
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), String> {
        self.committed(Vec::new()).await
    }

    async fn committed(&self, entries: Vec<AccessEntry>) -> Result<(), String> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send((entries, Some(done)))
            .map_err(|_| "the access log writer has stopped".to_string())?;
        committed
            .await
            .map_err(|_| "the access log writer has stopped".to_string())?
    }
}
