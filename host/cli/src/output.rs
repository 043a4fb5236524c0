//! Standard output that ends quietly when its reader goes away
//! (`folkhub … | head`): `println!` would panic on the closed pipe.
//!
//! A closed stdout outside a run exits at once with success (the reader
//! had what it wanted). During a sync run it cancels the run instead
//! ([`closed`] completes), so the run log records it as cancelled rather
//! than leaving it running.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static CLOSED: AtomicBool = AtomicBool::new(false);
static IN_RUN: AtomicBool = AtomicBool::new(false);
static CLOSED_NOTICE: Notify = Notify::const_new();

/// Writes one line to stdout (see [`crate::out!`]).
pub fn line(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_fmt(format_args!("{args}\n"))
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            CLOSED_NOTICE.notify_waiters();
            if !IN_RUN.load(Ordering::Relaxed) {
                std::process::exit(0);
            }
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// Completes when stdout's reader has gone.
pub async fn closed() {
    let notified = CLOSED_NOTICE.notified();
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    notified.await;
}

/// Marks a run in progress: a closed stdout then cancels it (through
/// [`closed`]) instead of exiting.
pub struct InRun;

impl InRun {
    pub fn start() -> InRun {
        IN_RUN.store(true, Ordering::Relaxed);
        InRun
    }
}

impl Drop for InRun {
    fn drop(&mut self) {
        IN_RUN.store(false, Ordering::Relaxed);
    }
}

/// What stops a command early: Ctrl-C, SIGTERM, SIGHUP (the terminal
/// went away) or stdout's reader going away. Completes with the reason.
pub async fn stop_signal() -> String {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut hangup = signal(SignalKind::hangup()).ok();
        let term = async {
            match term.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let hangup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)".to_string(),
            _ = term => "terminated (SIGTERM)".to_string(),
            _ = hangup => "the terminal went away (SIGHUP)".to_string(),
            () = closed() => "standard output was closed".to_string(),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)".to_string(),
            () = closed() => "standard output was closed".to_string(),
        }
    }
}
