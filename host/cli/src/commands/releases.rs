//! `folkhub releases keygen|sign|verify`: a publisher's Ed25519 key, its
//! signature on a manifest entry, and an operator's check of a manifest.
//! None of them opens a store: a vendor runs them on their own machine.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use folkhub_manifest::signing;

pub fn keygen(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!(
            "{} exists; a signing key is not overwritten (move it away first if you mean to replace it)",
            out.display()
        );
    }
    let (private, public) = signing::generate().map_err(anyhow::Error::msg)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, format!("{private}\n"))
        .with_context(|| format!("writing {}", out.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600))?;
    }
    out!(
        "wrote the private key to {} (keep it secret)",
        out.display()
    );
    out!("public key: {public}");
    out!(
        "operators trust it with, in folkhub.toml (a list replaces the default; keep the folkhub project's key in it):\n  [registry.trusted_keys]\n  folkhub = \"{}\"\n  YOUR-NAME = \"{public}\"",
        signing::project_key()
    );
    Ok(())
}

pub fn sign(
    manifest: &Path,
    connector: &str,
    version: &str,
    key: &Path,
    publisher: &str,
) -> anyhow::Result<()> {
    let private = std::fs::read_to_string(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let parsed = folkhub_manifest::Manifest::load(manifest)?;
    let Some(release) = parsed.find(connector, Some(version)) else {
        bail!(
            "{} has no release {connector} {version}; add its entry (with the artifact's sha256) first",
            manifest.display()
        );
    };
    // The digest signed must be the artifact's: a signature over a stale
    // digest would vouch for bytes nobody has.
    let path = parsed.artifact_path(release);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let digest = folkhub_runtime::engine::sha256_hex(&bytes);
    if digest != release.sha256 {
        bail!(
            "{connector} {version}: the entry says sha256 {} but {} has {digest}; fix the entry before signing",
            release.sha256,
            path.display()
        );
    }
    let mut signed = release.clone();
    signing::sign(&mut signed, publisher, &private).map_err(anyhow::Error::msg)?;
    let updated = signing::set_in_entry(
        &text,
        connector,
        version,
        &[
            ("publisher", publisher),
            ("signature", signed.signature.as_deref().unwrap_or_default()),
        ],
    )
    .with_context(|| format!("no [[release]] block for {connector} {version}"))?;
    // Read back before writing: the file must say what was signed.
    let written = folkhub_manifest::Manifest::parse(
        &updated,
        &manifest.display().to_string(),
        parsed.root.clone(),
    )?;
    let public = signing::public_key(&private).map_err(anyhow::Error::msg)?;
    let trusted: BTreeMap<String, String> = [(publisher.to_string(), public)].into();
    let check = written
        .find(connector, Some(version))
        .context("the signed entry")?;
    signing::verify(check, &trusted).map_err(|e| anyhow::anyhow!("{connector} {version}: {e}"))?;
    let partial = manifest.with_extension("toml.partial");
    std::fs::write(&partial, &updated)?;
    std::fs::rename(&partial, manifest)?;
    out!(
        "signed {connector} {version} as {publisher} in {}",
        manifest.display()
    );
    Ok(())
}

pub fn verify(manifest: &Path, trust: &[String], config: Option<&Path>) -> anyhow::Result<()> {
    let trusted: BTreeMap<String, String> = if !trust.is_empty() {
        trust
            .iter()
            .map(|t| {
                t.split_once('=')
                    .map(|(n, k)| (n.trim().to_string(), k.trim().to_string()))
                    .with_context(|| format!("--trust {t:?}: NAME=BASE64-KEY"))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        match folkhub_manifest::Config::load(config) {
            Ok(c) => c.registry.trusted_keys,
            Err(_) => folkhub_manifest::config::RegistryConfig::default().trusted_keys,
        }
    };
    let parsed = folkhub_manifest::Manifest::load(manifest)?;
    let mut bad = 0;
    for release in &parsed.releases {
        match signing::verify(release, &trusted) {
            Ok(()) => out!(
                "ok      {} {} signed by {}",
                release.connector,
                release.version,
                release.publisher.as_deref().unwrap_or("?")
            ),
            Err(e) => {
                bad += 1;
                out!("refused {} {}: {e}", release.connector, release.version);
            }
        }
    }
    if bad > 0 {
        bail!(
            "{bad} of {} releases would be refused",
            parsed.releases.len()
        );
    }
    Ok(())
}
