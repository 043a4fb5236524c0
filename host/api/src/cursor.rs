//! Opaque paging cursors for search.
//!
//! A cursor is `base64url(key ‖ tag)`: the store key of the last person
//! the page showed (a person the client was allowed to see) and the first
//! 16 bytes of HMAC-SHA256 over the client, the search's criteria and that
//! key, keyed with the store's `cursor` secret (shared by every host, see
//! `PersonStore::server_secret`). A client cannot make a cursor point
//! anywhere it was not given, nor carry one to another search or another
//! client: such a cursor is refused as `invalid-cursor`. Cursors are made
//! after filtering, so none names a person the search did not show.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const TAG: usize = 16;

/// The secret cursors are signed with.
#[derive(Clone)]
pub struct CursorKey(Vec<u8>);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    pub fn new(secret: &[u8]) -> CursorKey {
        CursorKey(secret.to_vec())
    }

    fn tag(&self, client: &str, criteria: &str, key: i64) -> [u8; TAG] {
        // HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(client.as_bytes());
        mac.update(&[0]);
        mac.update(criteria.as_bytes());
        mac.update(&[0]);
        mac.update(&key.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&full[..TAG]);
        tag
    }

    /// The cursor after `key` for this client and search.
    pub fn seal(&self, client: &str, criteria: &str, key: i64) -> String {
        let mut bytes = key.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.tag(client, criteria, key));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The key a cursor continues after, if this client was given it for
    /// this search.
    pub fn open(&self, client: &str, criteria: &str, cursor: &str) -> Option<i64> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor.as_bytes()).ok()?;
        if bytes.len() != 8 + TAG {
            return None;
        }
        let key = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        let expected = self.tag(client, criteria, key);
        // Constant-time comparison.
        let differs = expected
            .iter()
            .zip(&bytes[8..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (differs == 0).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_for_its_client_and_search() {
        let key = CursorKey::new(b"secret");
        let cursor = key.seal("school", r#"{"id":"010190"}"#, 25);
        assert!(!cursor.contains("25"));
        assert_eq!(key.open("school", r#"{"id":"010190"}"#, &cursor), Some(25));
        assert_eq!(key.open("health", r#"{"id":"010190"}"#, &cursor), None);
        assert_eq!(key.open("school", r#"{"id":"010191"}"#, &cursor), None);
        assert_eq!(
            CursorKey::new(b"other").open("school", r#"{"id":"010190"}"#, &cursor),
            None
        );
        // A forged key with the old tag.
        let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap_or_default();
        bytes[7] = 24;
        assert_eq!(
            key.open(
                "school",
                r#"{"id":"010190"}"#,
                &URL_SAFE_NO_PAD.encode(bytes)
            ),
            None
        );
        assert_eq!(key.open("school", r#"{"id":"010190"}"#, "25"), None);
    }
}
