//! Vendors' registries at a URL (`[registry] vendor_urls`): which URLs an
//! operator may grant, where a fetched copy is kept, and where each
//! artifact is fetched from.
//!
//! The host never reads a registry over the network while it runs a
//! command: `folkhub connectors fetch` copies each granted registry into
//! `[registry] mirror`, and the host reads that copy as it reads a local
//! vendor registry. What the URL is trusted for is availability only: each
//! artifact is checked against its entry's sha256 when it is fetched, and
//! each release against its publisher's signature when it is installed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ring::digest::{SHA256, digest};
use url::Url;

/// The file name a fetched registry's manifest is kept under.
pub const MANIFEST: &str = "registry-manifest.toml";

/// A registry URL an operator may grant: `https://`, or `http://` to a
/// loopback address (a registry on the same machine, as in tests); no
/// user name or password in it, no query or fragment.
pub fn registry_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{text:?} names no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "{text:?} is plain http to another machine: anyone on the way could withhold or replace releases; use https"
            ));
        }
        other => return Err(format!("{text:?}: {other}:// is not fetched; use https://")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} carries credentials; a registry is public, its releases are signed"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?} has a query or fragment; name the manifest file itself"
        ));
    }
    if url.path().ends_with('/') {
        return Err(format!(
            "{text:?} names a directory; name the manifest file, e.g. …/{MANIFEST}"
        ));
    }
    Ok(url)
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The directory a registry's fetched copy is kept in under `mirror`:
/// `<host>[_<port>]/<first 16 hex digits of the URL's SHA-256>`, so two
/// registries on one host never share a directory and an operator can tell
/// whose copy is whose.
pub fn mirror_dir(mirror: &Path, url: &Url) -> PathBuf {
    let host: String = url
        .host_str()
        .unwrap_or("registry")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let host = match url.port() {
        Some(port) => format!("{host}_{port}"),
        None => host,
    };
    let hash: String = digest(&SHA256, url.as_str().as_bytes()).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    mirror.join(host).join(hash)
}

/// Where a release's artifact is fetched from: its path (already checked to
/// be relative and to stay inside its registry) resolved against the
/// manifest's URL. The result stays in the manifest's directory on the
/// same origin, or this is an error.
pub fn artifact_url(manifest: &Url, artifact: &str) -> Result<Url, String> {
    if artifact.contains(['\\', '?', '#', '%']) || artifact.starts_with('/') {
        return Err(format!(
            "artifact {artifact:?}: a fetched registry's artifact path is plain segments separated by /"
        ));
    }
    let url = manifest
        .join(artifact)
        .map_err(|e| format!("artifact {artifact:?}: {e}"))?;
    let dir = &manifest.as_str()[..manifest.as_str().rfind('/').map_or(0, |i| i + 1)];
    if url.origin() != manifest.origin() || !url.as_str().starts_with(dir) {
        return Err(format!(
            "artifact {artifact:?} resolves to {url}, outside the registry's directory {dir}"
        ));
    }
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_granted() {
        assert!(
            registry_url("https://registry.acme.example/folkhub/registry-manifest.toml").is_ok()
        );
        assert!(registry_url("http://127.0.0.1:8080/registry-manifest.toml").is_ok());
        assert!(registry_url("http://[::1]:8080/registry-manifest.toml").is_ok());
        assert!(registry_url("http://localhost/r.toml").is_ok());
        for (bad, why) in [
            (
                "http://registry.acme.example/registry-manifest.toml",
                "use https",
            ),
            (
                "ftp://registry.acme.example/registry-manifest.toml",
                "use https",
            ),
            (
                "https://user:pw@registry.acme.example/r.toml",
                "credentials",
            ),
            ("https://registry.acme.example/r.toml?token=1", "query"),
            (
                "https://registry.acme.example/folkhub/",
                "names a directory",
            ),
            ("registry-manifest.toml", "not a URL"),
        ] {
            let e = registry_url(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn artifacts_resolve_inside_the_registrys_directory() {
        let m = registry_url("https://r.acme.example/folkhub/registry-manifest.toml").unwrap();
        assert_eq!(
            artifact_url(&m, "artifacts/acme-krr-1.0.0.wasm")
                .unwrap()
                .as_str(),
            "https://r.acme.example/folkhub/artifacts/acme-krr-1.0.0.wasm"
        );
        for bad in [
            "../other/x.wasm",
            "/x.wasm",
            "a/%2e%2e/x.wasm",
            "x.wasm?y",
            "https://evil.example/x.wasm",
        ] {
            assert!(artifact_url(&m, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_registry_has_its_own_mirror_directory() {
        let a = registry_url("https://r.acme.example/a/registry-manifest.toml").unwrap();
        let b = registry_url("https://r.acme.example/b/registry-manifest.toml").unwrap();
        let c = registry_url("http://127.0.0.1:9000/registry-manifest.toml").unwrap();
        let root = Path::new("data/registries");
        assert_ne!(mirror_dir(root, &a), mirror_dir(root, &b));
        assert!(mirror_dir(root, &a).starts_with("data/registries/r.acme.example"));
        assert!(mirror_dir(root, &c).starts_with("data/registries/127.0.0.1_9000"));
    }
}
