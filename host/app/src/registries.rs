//! `folkhub connectors fetch`: copies each vendor registry the operator
//! granted by URL (`[registry] vendor_urls`) into `[registry] mirror`.
//!
//! A copy is replaced only by a complete, valid one: the manifest must
//! parse and validate as a local one does (unknown keys, artifact paths,
//! versions), and every artifact it lists must be fetched from the
//! registry's own directory and match its sha256 before the new manifest
//! takes the old one's place. A registry that is down, or serves anything
//! else, keeps its last good copy and the fetch says why. Artifacts already
//! held with the right digest are not fetched again (a published release
//! never changes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use folkhub_manifest::Manifest;
use folkhub_manifest::config::RegistryConfig;
use folkhub_manifest::remote::{self, MANIFEST};
use folkhub_runtime::engine::sha256_hex;

/// Largest manifest fetched.
const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;
/// Largest artifact fetched (a componentize-py component is about 19 MB).
const ARTIFACT_LIMIT: usize = 256 * 1024 * 1024;

/// What one registry's fetch did.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub url: String,
    /// The copy's manifest.
    pub manifest: PathBuf,
    pub releases: usize,
    /// Artifacts fetched now, and their bytes.
    pub downloaded: usize,
    pub bytes: u64,
    /// Artifacts already held with the right digest.
    pub kept: usize,
}

/// Fetches every granted registry; one outcome per URL, in config order.
pub async fn fetch_all(config: &RegistryConfig) -> Vec<(String, anyhow::Result<Fetched>)> {
    let mut out = Vec::new();
    for url in &config.vendor_urls {
        let result = fetch(url, &config.mirror).await;
        out.push((url.clone(), result));
    }
    out
}

/// Fetches one registry into its directory under `mirror`.
pub async fn fetch(text: &str, mirror: &Path) -> anyhow::Result<Fetched> {
    let url = remote::registry_url(text).map_err(anyhow::Error::msg)?;
    let dir = remote::mirror_dir(mirror, &url);
    let manifest_bytes = get(url.as_str(), MANIFEST_LIMIT).await?;
    let manifest_text = String::from_utf8(manifest_bytes.to_vec())
        .with_context(|| format!("{url} is not UTF-8 text"))?;
    let manifest = Manifest::parse(&manifest_text, url.as_str(), dir.clone())
        .map_err(|e| anyhow::anyhow!("{e}\nthe last good copy, if any, stays in use"))?;

    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the registry copy {}", dir.display()))?;
    let mut fetched = Fetched {
        url: url.to_string(),
        manifest: dir.join(MANIFEST),
        releases: manifest.releases.len(),
        downloaded: 0,
        bytes: 0,
        kept: 0,
    };
    for release in &manifest.releases {
        let local = manifest.artifact_path(release);
        if std::fs::read(&local).is_ok_and(|b| sha256_hex(&b) == release.sha256) {
            fetched.kept += 1;
            continue;
        }
        let from = remote::artifact_url(&url, &release.artifact)
            .map_err(|e| anyhow::anyhow!("{} {}: {e}", release.connector, release.version))?;
        let bytes = get(from.as_str(), ARTIFACT_LIMIT).await.with_context(|| {
            format!(
                "fetching {} {}'s artifact",
                release.connector, release.version
            )
        })?;
        let digest = sha256_hex(&bytes);
        if digest != release.sha256 {
            anyhow::bail!(
                "{} {}: {from} has sha256 {digest}, but the manifest says {}; the registry serves another file than it lists, so nothing of it was taken (ask its publisher)",
                release.connector,
                release.version,
                release.sha256
            );
        }
        write_atomically(&local, &bytes)?;
        fetched.downloaded += 1;
        fetched.bytes += bytes.len() as u64;
    }
    // Last, so a copy's manifest only ever lists artifacts it holds.
    write_atomically(&fetched.manifest, manifest_text.as_bytes())?;
    Ok(fetched)
}

async fn get(url: &str, limit: usize) -> anyhow::Result<Bytes> {
    let (status, body) = folkhub_runtime::credentials::send(
        http::Method::GET,
        url,
        &[],
        Bytes::new(),
        Duration::from_secs(60),
        limit,
    )
    .await
    .map_err(|e| anyhow::anyhow!("fetching {e}"))?;
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}");
    }
    Ok(body)
}

/// Writes beside the target and renames, so a reader sees the old file or
/// the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
