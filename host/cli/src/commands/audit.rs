//! `folkhub audit verify` and `folkhub audit export`: prints what
//! [`folkhub_app::audit`] finds and writes.

use std::path::Path;

use folkhub_app::Host;

/// `folkhub audit verify [--against DIR] [--json]`: exits 1 when broken.
pub async fn verify(host: &Host, against: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let verified = folkhub_app::audit::verify(host, against).await?;
    let report = &verified.chain;
    let heads_checked = verified.exported_heads_checked;
    let head_problems = &verified.exported_heads_broken;
    if json {
        out!("{}", serde_json::to_string_pretty(&verified)?);
    } else {
        out!(
            "access log: {} entries{}",
            report.entries,
            if report.before_chain > 0 {
                format!(
                    " ({} written before the chain existed, not covered)",
                    report.before_chain
                )
            } else {
                String::new()
            }
        );
        match (&report.broken, &report.head) {
            (Some(b), _) => out!("BROKEN at entry {}: {}", b.seq, b.why),
            (None, Some(h)) => out!("chain holds; head: entry {} {}", h.seq, h.hash),
            (None, None) => out!("chain holds (no chained entries yet)"),
        }
        if against.is_some() {
            out!("exported day heads checked: {heads_checked}");
            for p in head_problems {
                out!("BROKEN: {p}");
            }
        }
    }
    verified.ensure_intact()
}

/// `folkhub audit export [--day D] --dir DIR`.
pub async fn export(host: &Host, day: Option<&str>, dir: &Path) -> anyhow::Result<()> {
    let e = folkhub_app::audit::export(host, day, dir).await?;
    out!(
        "{}: {} entries of {}{}",
        e.file.display(),
        e.entries,
        e.day,
        e.head
            .as_ref()
            .map(|h| format!(", chain head entry {} {}", h.seq, h.hash))
            .unwrap_or_default()
    );
    Ok(())
}
