//! The access log writer: every person a client reads is logged **before**
//! the answer leaves (no log entry, no answer). Requests hand their entries
//! to one writer task, which commits whatever has queued up in one
//! transaction (group commit) and then releases the waiting requests, so
//! the log keeps up with many readers on one SQLite writer.

use std::sync::Arc;

use folkhub_store::{AccessEntry, PersonStore};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

type Job = (Vec<AccessEntry>, oneshot::Sender<Result<(), String>>);

/// A handle to the writer; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    queue: mpsc::UnboundedSender<Job>,
}

/// The most entries one transaction takes.
const GROUP: usize = 5_000;

impl AccessLog {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: Arc<dyn PersonStore>, metrics: Arc<Metrics>) -> AccessLog {
        let (queue, mut jobs) = mpsc::unbounded_channel::<Job>();
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
                if result.is_ok() {
                    metrics.logged(entries.len());
                }
                for (_, done) in group {
                    let _ = done.send(result.clone());
                }
            }
        });
        AccessLog { queue }
    }

    /// Writes entries and waits until they are committed.
    pub async fn write(&self, entries: Vec<AccessEntry>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let (done, committed) = oneshot::channel();
        self.queue
            .send((entries, done))
            .map_err(|_| "the access log writer has stopped".to_string())?;
        committed
            .await
            .map_err(|_| "the access log writer has stopped".to_string())?
    }
}
