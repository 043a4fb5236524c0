//! Release signatures: a publisher signs each manifest entry, its artifact
//! digest included, with an Ed25519 key; a host installs a release only
//! when a key it trusts (`[registry] trusted_keys`) signed it.
//!
//! **What is signed** is the entry as a JSON object with sorted keys,
//! without `signature`, without `artifact` (where an operator keeps the
//! file; `sha256` fixes its bytes) and without keys that have no value,
//! after the line `folkhub release v1`. The entry holds the artifact's sha256, so the
//! signature covers the component's bytes, and everything else an operator
//! relies on: the connector id, contract, the hosts it may reach, its
//! fields, capabilities, credentials, its cost and deadlines. Editing any
//! of it, or pointing the entry at other bytes, breaks the signature.
//!
//! Keys are Ed25519 (RFC 8032) through `ring`, which the TLS stack already
//! brings: a private key is a PKCS#8 document (base64 in a file), a public
//! key the 32 raw bytes (base64).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::Value;

use crate::registry::Release;

/// The name the folkhub project signs its own releases under.
pub const PROJECT_PUBLISHER: &str = "folkhub";

/// The folkhub project's public key (its private half is held by the
/// release managers, outside the repository).
pub fn project_key() -> &'static str {
    include_str!("../../../registry/publisher-keys/folkhub.pub").trim()
}

/// The bytes a publisher signs for `release`.
pub fn signed_message(release: &Release) -> Vec<u8> {
    let mut value = serde_json::to_value(release).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("signature");
        // Where the operator keeps the file is theirs to choose; its bytes
        // are fixed by `sha256`.
        map.remove("artifact");
    }
    strip_nulls(&mut value);
    // serde_json's maps are ordered by key: the text is canonical.
    let mut out = b"folkhub release v1\n".to_vec();
    out.extend(value.to_string().into_bytes());
    out
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(list) => list.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Why a release is not accepted as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverified {
    /// No `signature` (or no `publisher`) in the entry.
    Unsigned,
    /// Signed under a publisher name this host has no key for.
    Untrusted(String),
    /// The trusted key or the signature cannot be read.
    Malformed(String),
    /// The signature does not match the entry: the entry or the artifact
    /// digest changed after signing, or another key signed it.
    Mismatch(String),
}

impl std::fmt::Display for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unverified::Unsigned => f.write_str(
                "it is not signed (no `publisher` and `signature` in its manifest entry); ask its publisher for a signed release, or set [registry] allow_unsigned = true on a development host",
            ),
            Unverified::Untrusted(name) => write!(
                f,
                "it is signed by the publisher {name:?}, whose key this host does not trust; add the publisher's public key to [registry] trusted_keys if you trust them"
            ),
            Unverified::Malformed(why) => write!(f, "its signature cannot be checked: {why}"),
            Unverified::Mismatch(name) => write!(
                f,
                "its signature by {name:?} does not match its manifest entry: the entry or its artifact digest was changed after it was signed; do not install it"
            ),
        }
    }
}

/// Checks `release`'s signature against the trusted keys.
pub fn verify(release: &Release, trusted: &BTreeMap<String, String>) -> Result<(), Unverified> {
    let (Some(publisher), Some(signature)) = (&release.publisher, &release.signature) else {
        return Err(Unverified::Unsigned);
    };
    let key = trusted
        .get(publisher)
        .ok_or_else(|| Unverified::Untrusted(publisher.clone()))?;
    let key = STANDARD.decode(key.trim()).map_err(|e| {
        Unverified::Malformed(format!("the key of {publisher:?} is not base64: {e}"))
    })?;
    let signature = STANDARD
        .decode(signature.trim())
        .map_err(|e| Unverified::Malformed(format!("the signature is not base64: {e}")))?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&signed_message(release), &signature)
        .map_err(|_| Unverified::Mismatch(publisher.clone()))
}

/// A new key pair: the private key (PKCS#8, base64) and the public key
/// (base64).
pub fn generate() -> Result<(String, String), String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "the system's random source failed".to_string())?;
    let public = public_key(&STANDARD.encode(pkcs8.as_ref()))?;
    Ok((STANDARD.encode(pkcs8.as_ref()), public))
}

fn key_pair(private: &str) -> Result<Ed25519KeyPair, String> {
    let der = STANDARD
        .decode(private.trim())
        .map_err(|e| format!("the private key is not base64: {e}"))?;
    // v1 documents too (OpenSSL's `genpkey -algorithm ed25519`).
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| format!("the private key is not an Ed25519 PKCS#8 key: {e}"))
}

/// The public key (base64) of a private key (PKCS#8, base64).
pub fn public_key(private: &str) -> Result<String, String> {
    Ok(STANDARD.encode(key_pair(private)?.public_key().as_ref()))
}

/// Signs `release` as `publisher`: sets both fields on it.
pub fn sign(release: &mut Release, publisher: &str, private: &str) -> Result<(), String> {
    let pair = key_pair(private)?;
    release.publisher = Some(publisher.to_string());
    release.signature = None;
    let signature = pair.sign(&signed_message(release));
    release.signature = Some(STANDARD.encode(signature.as_ref()));
    Ok(())
}

/// Sets `key = "value"` lines in the `[[release]]` block of `connector`
/// `version` in manifest text, replacing lines of the same keys, and adding
/// them after its `sha256` line otherwise. The rest of the text, comments
/// included, stays as it is. `None` when no such block exists.
pub fn set_in_entry(
    text: &str,
    connector: &str,
    version: &str,
    pairs: &[(&str, &str)],
) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[release]]")
        .map(|(i, _)| i)
        .collect();
    let (start, end) = starts.iter().enumerate().find_map(|(n, &start)| {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let block = &lines[start..end];
        let has = |k: &str, v: &str| block.iter().any(|l| l.trim() == format!("{k} = \"{v}\""));
        (has("connector", connector) && has("version", version)).then_some((start, end))
    })?;
    let mut block: Vec<String> = lines[start..end]
        .iter()
        .filter(|l| {
            !pairs
                .iter()
                .any(|(k, _)| l.trim_start().starts_with(&format!("{k} = ")))
        })
        .map(|l| l.to_string())
        .collect();
    let at = block
        .iter()
        .position(|l| l.trim_start().starts_with("sha256 = "))
        .map_or(block.len(), |i| i + 1);
    for (i, (k, v)) in pairs.iter().enumerate() {
        block.insert(at + i, format!("{k} = {}", Value::String(v.to_string())));
    }
    let mut out: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    out.extend(block);
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    Some(out.join("\n") + "\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::registry::Manifest;

    const ENTRY: &str = r#"schema = 1
# a comment that stays
[[release]]
connector = "krr"
version = "9.0.0"
contract = "2.1.0"
artifact = "a.wasm"
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
upstream = { system = "KRR", version = "v2" }
outbound_hosts = ["{base-url}"]
fields = ["contact.email"]
capabilities = ["lookup"]
credentials = "maskinporten"
published = 2026-12-03
notes = "x"
"#;

    fn release(text: &str) -> Release {
        Manifest::parse(text, "m.toml", Default::default())
            .unwrap()
            .releases
            .remove(0)
    }

    #[test]
    fn a_signature_covers_the_entry_and_the_artifact_digest() {
        let (private, public) = generate().unwrap();
        let trusted: BTreeMap<String, String> = [("acme".to_string(), public)].into();
        let mut r = release(ENTRY);
        assert_eq!(verify(&r, &trusted), Err(Unverified::Unsigned));
        sign(&mut r, "acme", &private).unwrap();
        assert_eq!(verify(&r, &trusted), Ok(()));
        // Written into the manifest text and read back, it still holds.
        let text = set_in_entry(
            ENTRY,
            "krr",
            "9.0.0",
            &[
                ("publisher", r.publisher.as_deref().unwrap()),
                ("signature", r.signature.as_deref().unwrap()),
            ],
        )
        .unwrap();
        assert!(text.contains("# a comment that stays"));
        let read = release(&text);
        assert_eq!(verify(&read, &trusted), Ok(()));
        // Any change breaks it: the artifact's bytes, a host it may reach,
        // what it costs, the publisher's name.
        for changed in [
            text.replace("sha256 = \"1111", "sha256 = \"2111"),
            text.replace(
                "[\"{base-url}\"]",
                "[\"{base-url}\", \"https://evil.example\"]",
            ),
            text.replace(
                "published = 2026-12-03",
                "published = 2026-12-03\ncost_per_call = 0.5",
            ),
        ] {
            assert!(
                matches!(
                    verify(&release(&changed), &trusted),
                    Err(Unverified::Mismatch(_))
                ),
                "{changed}"
            );
        }
        let renamed = text.replace("publisher = \"acme\"", "publisher = \"other\"");
        assert_eq!(
            verify(&release(&renamed), &trusted),
            Err(Unverified::Untrusted("other".into()))
        );
        // Another key under the trusted name does not pass.
        let (_, stranger) = generate().unwrap();
        let wrong: BTreeMap<String, String> = [("acme".to_string(), stranger)].into();
        assert_eq!(
            verify(&read, &wrong),
            Err(Unverified::Mismatch("acme".into()))
        );
        // Signing again replaces the lines rather than adding more.
        let again = set_in_entry(&text, "krr", "9.0.0", &[("signature", "x")]).unwrap();
        assert_eq!(again.matches("signature = ").count(), 1);
        assert!(set_in_entry(&text, "krr", "1.0.0", &[("signature", "x")]).is_none());
    }
}
