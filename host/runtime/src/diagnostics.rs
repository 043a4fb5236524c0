//! What a connector says that is not an answer: its stdout and stderr, and
//! why the host could not link it.
//!
//! **Guest output.** A component's stdout and stderr go into a bounded
//! buffer per call ([`GuestOutput`], 16 KiB each; what comes after is
//! counted and dropped, never refused, so a chatty guest is not made to
//! fail by its own logging). After the call the host writes them to its log
//! as one event per stream, tagged with the connector and release, inside
//! whatever span the caller runs in (a sync run's span names the run). A
//! trapped call's message ends with the last lines of stderr: for a Python
//! or JavaScript connector that is the traceback, which otherwise is lost.
//!
//! **Link errors.** wasmtime says a missing import "has the wrong type:
//! function implementation is missing". [`explain_link_error`] names the
//! interface and the function, says that this host does not provide it, and
//! says what a connector may import.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// How much of each stream a call keeps.
pub const OUTPUT_LIMIT: usize = 16 * 1024;
/// How much of stderr a trap message carries.
pub const TRAP_TAIL: usize = 2 * 1024;

/// What a connector may import, for messages and the author guide
/// (docs/connector-author-guide.md, "What the host links").
pub const LINKED: &str = "folkhub:connector/host, wasi:io, wasi:clocks, wasi:random, wasi:cli (stdout and stderr go to the host log; no arguments, no environment, stdin empty), wasi:filesystem (no directories are opened), wasi:sockets (every address is refused) and wasi:http/outgoing-handler (only to the hosts the operator granted), all WASI at 0.2.0 to 0.2.12";

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: usize,
}

/// One stream of one call, bounded. Clones share the buffer.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    buffer: Arc<Mutex<Buffer>>,
    limit: usize,
}

impl GuestOutput {
    pub fn new(limit: usize) -> GuestOutput {
        GuestOutput {
            buffer: Arc::default(),
            limit,
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.limit.saturating_sub(buffer.kept.len());
        let keep = room.min(bytes.len());
        buffer.kept.extend_from_slice(&bytes[..keep]);
        buffer.dropped += bytes.len() - keep;
    }

    /// What was written (lossy UTF-8), and how many bytes were dropped.
    pub fn contents(&self) -> (String, usize) {
        let buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        (
            String::from_utf8_lossy(&buffer.kept).into_owned(),
            buffer.dropped,
        )
    }

    /// The last `max` bytes of what was written, cut at a line start.
    pub fn tail(&self, max: usize) -> String {
        let (text, _) = self.contents();
        let text = text.trim_end();
        if text.len() <= max {
            return text.to_string();
        }
        let mut start = text.len() - max;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let cut = &text[start..];
        match cut.find('\n') {
            Some(i) => format!("…\n{}", &cut[i + 1..]),
            None => format!("…{cut}"),
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Always accepted: past the limit the bytes are counted, not kept.
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A call's stdout and stderr.
#[derive(Debug, Clone)]
pub struct CallOutput {
    pub stdout: GuestOutput,
    pub stderr: GuestOutput,
}

impl Default for CallOutput {
    fn default() -> Self {
        CallOutput {
            stdout: GuestOutput::new(OUTPUT_LIMIT),
            stderr: GuestOutput::new(OUTPUT_LIMIT),
        }
    }
}

impl CallOutput {
    /// Writes what the guest printed to the host log, one event per stream.
    pub fn log(&self, connector: &str, version: &str) {
        for (stream, output) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let (text, dropped) = output.contents();
            let text = text.trim_end();
            if text.is_empty() && dropped == 0 {
                continue;
            }
            tracing::info!(
                target: "folkhub::guest",
                connector,
                version,
                stream,
                dropped,
                "{text}"
            );
        }
    }
}

/// Says why a component could not be linked, in terms a connector author
/// can act on. `error` is what `Linker::instantiate_pre` returned.
pub fn explain_link_error(error: &wasmtime::Error) -> String {
    let messages: Vec<String> = error.chain().map(|c| c.to_string()).collect();
    let quoted = |text: &str, after: &str| -> Option<String> {
        let rest = &text[text.find(after)? + after.len()..];
        let rest = rest.strip_prefix('`')?;
        Some(rest[..rest.find('`')?].to_string())
    };
    let interface = messages
        .iter()
        .find_map(|m| quoted(m, "component imports instance "));
    let function = messages.iter().find_map(|m| quoted(m, "instance export "));
    let leaf = messages.last().cloned().unwrap_or_default();
    match (interface, function) {
        (Some(interface), Some(function)) if leaf.contains("implementation is missing") => {
            format!(
                "it imports `{function}` from `{interface}`, which this host does not provide. A connector may import only {LINKED}; build it against the contract's world (wit/connector-v2) and nothing else"
            )
        }
        (Some(interface), Some(function)) => format!(
            "it imports `{function}` from `{interface}` with another type than this host provides ({leaf}): it was built against a different version of that interface; build it against the contract package this host runs. A connector may import only {LINKED}"
        ),
        (Some(interface), None) => format!(
            "it imports `{interface}`, which this host does not provide ({leaf}). A connector may import only {LINKED}"
        ),
        _ => messages.join(": "),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn output_is_bounded_and_never_refused() {
        let out = GuestOutput::new(10);
        let mut writer = Box::into_pin(out.async_stream());
        writer.write_all(b"0123456789abcdef").await.unwrap();
        writer.write_all(b"more").await.unwrap();
        assert_eq!(out.contents(), ("0123456789".to_string(), 10));
    }

    #[test]
    fn tail_starts_at_a_line() {
        let out = GuestOutput::new(1000);
        out.push(b"Traceback (most recent call last):\n  File \"app.py\", line 3\nKeyError: 'x'\n");
        assert_eq!(
            out.tail(20),
            "…\nKeyError: 'x'",
            "the last whole lines within the limit"
        );
        assert!(out.tail(1000).starts_with("Traceback"));
    }

    fn link(wat: &str) -> String {
        let runtime = crate::engine::Runtime::new(None, crate::engine::Limits::default()).unwrap();
        let component = wasmtime::component::Component::new(runtime.engine(), wat).unwrap();
        let error = runtime
            .linker
            .instantiate_pre(&component)
            .err()
            .expect("refused");
        explain_link_error(&error)
    }

    #[test]
    fn a_missing_import_is_named_with_its_interface() {
        let message = link(
            r#"(component (import "acme:kv/store@1.0.0" (instance (export "get" (func (param "k" string) (result string))))))"#,
        );
        assert!(
            message.starts_with(
                "it imports `get` from `acme:kv/store@1.0.0`, which this host does not provide"
            ),
            "{message}"
        );
        assert!(!message.contains("wrong type"), "{message}");
        assert!(message.contains("wasi:http/outgoing-handler"), "{message}");
        // A function the host's version of a WASI interface lacks.
        let message = link(
            r#"(component (import "wasi:random/random@0.2.0" (instance (export "get-random-u128" (func (result u64))))))"#,
        );
        assert!(
            message.starts_with("it imports `get-random-u128` from `wasi:random/random@0.2.0`, which this host does not provide"),
            "{message}"
        );
    }

    #[test]
    fn a_mismatched_import_says_it_was_built_against_another_version() {
        let message = link(
            r#"(component (import "wasi:random/random@0.2.0" (instance (export "get-random-u64" (func (result u32))))))"#,
        );
        assert!(
            message.contains(
                "imports `get-random-u64` from `wasi:random/random@0.2.0` with another type"
            ),
            "{message}"
        );
        assert!(message.contains("expected `u64` found `u32`"), "{message}");
    }
}
