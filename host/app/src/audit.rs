//! The access log's hash chain, checked here (`verify`) and shipped
//! elsewhere one ended day at a time (`export`).

use std::path::Path;

use anyhow::{Context, bail};
use folkhub_store::audit::{ChainHead, ChainReport};
use folkhub_store::{Access, AccessQuery};
use serde::Serialize;

use crate::host::Host;

/// The day files `export` writes: `access-YYYY-MM-DD.jsonl`.
fn day_file(dir: &Path, day: chrono::NaiveDate) -> std::path::PathBuf {
    dir.join(format!("access-{day}.jsonl"))
}

/// What `verify` found.
#[derive(Debug, Serialize)]
pub struct Verified {
    /// The chain recomputed from its first entry.
    pub chain: ChainReport,
    /// Day files whose head was compared with the store (`--against`).
    pub exported_heads_checked: usize,
    /// Day files whose head the store no longer ends in, and why.
    pub exported_heads_broken: Vec<String>,
}

impl Verified {
    /// An error saying what was changed, unless the log is intact.
    pub fn ensure_intact(&self) -> anyhow::Result<()> {
        if let Some(b) = &self.chain.broken {
            bail!(
                "the access log was changed: entry {} is the first that does not match ({}); keep the \
                 database as it is for investigation and compare with the exported day files",
                b.seq,
                b.why
            );
        }
        if !self.exported_heads_broken.is_empty() {
            bail!(
                "the access log no longer ends in the heads exported earlier: it was rewritten or cut"
            );
        }
        Ok(())
    }
}

/// Recomputes the access log's chain and, with `against` (a directory of
/// exported day files), checks the store still ends in each day's head.
pub async fn verify(host: &Host, against: Option<&Path>) -> anyhow::Result<Verified> {
    let report = host.store.verify_access_log().await?;
    let mut heads_checked = 0usize;
    let mut head_problems = Vec::new();
    if let Some(dir) = against {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("--against {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("access-") && n.ends_with(".jsonl"))
            })
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let last = text.lines().last().unwrap_or("");
            let head: Option<ChainHead> = serde_json::from_str::<serde_json::Value>(last)
                .ok()
                .and_then(|v| serde_json::from_value(v["head"].clone()).ok());
            let Some(head) = head else {
                continue; // a day without entries
            };
            heads_checked += 1;
            let stored = host
                .store()
                .access_log(&AccessQuery {
                    after: head.seq - 1,
                    limit: 1,
                    ..AccessQuery::default()
                })
                .await?;
            match stored.first() {
                Some(e) if e.seq == head.seq && e.hash.as_deref() == Some(&head.hash) => {}
                Some(e) if e.seq == head.seq => head_problems.push(format!(
                    "{}: entry {} has another hash in the store than when it was exported",
                    file.display(),
                    head.seq
                )),
                _ => head_problems.push(format!(
                    "{}: entry {} is no longer in the store",
                    file.display(),
                    head.seq
                )),
            }
        }
    }
    Ok(Verified {
        chain: report,
        exported_heads_checked: heads_checked,
        exported_heads_broken: head_problems,
    })
}

/// What `export` wrote.
#[derive(Debug, Serialize)]
pub struct Exported {
    pub file: std::path::PathBuf,
    pub day: chrono::NaiveDate,
    pub entries: u64,
    /// The last chained entry of the day.
    pub head: Option<ChainHead>,
}

/// Writes an ended day (`day`, default yesterday, UTC) of the access log
/// to `DIR/access-DAY.jsonl`, read-only, once, ending in its chain head.
pub async fn export(host: &Host, day: Option<&str>, dir: &Path) -> anyhow::Result<Exported> {
    let day = match day {
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .with_context(|| format!("--day {d:?}: a date YYYY-MM-DD"))?,
        None => (chrono::Utc::now() - chrono::Duration::days(1)).date_naive(),
    };
    if day >= chrono::Utc::now().date_naive() {
        bail!("--day {day}: only a day that has ended can be exported (UTC)");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = day_file(dir, day);
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let mut query = AccessQuery {
        since: Some(start),
        until: Some(start + chrono::Duration::days(1)),
        after: 0,
        limit: 10_000,
        ..AccessQuery::default()
    };
    // Written to a temporary file, then moved into place read-only: a
    // day file is never half written and never written twice.
    let partial = dir.join(format!(".access-{day}.jsonl.partial"));
    let mut out = Vec::new();
    let mut count = 0u64;
    let mut head: Option<ChainHead> = None;
    loop {
        let page = host.store.access_log(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = last.seq;
        for e in &page {
            out.extend_from_slice(serde_json::to_string(e)?.as_bytes());
            out.push(b'\n');
            count += 1;
            if let Some(hash) = &e.hash {
                head = Some(ChainHead {
                    seq: e.seq,
                    hash: hash.clone(),
                });
            }
        }
        if page.len() < query.limit as usize {
            break;
        }
    }
    let closing = serde_json::json!({"day": day.to_string(), "entries": count, "head": head});
    out.extend_from_slice(closing.to_string().as_bytes());
    out.push(b'\n');
    if path.exists() {
        bail!(
            "{} exists: a day is exported once (compare it with `folkhub audit verify --against {}`)",
            path.display(),
            dir.display()
        );
    }
    // A partial file left by an export that died is not a day file.
    let _ = std::fs::remove_file(&partial);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&partial)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::io::Write::write_all(&mut file, &out)?;
        file.sync_all()?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o400))?;
    }
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(Exported {
        file: path,
        day,
        entries: count,
        head,
    })
}
