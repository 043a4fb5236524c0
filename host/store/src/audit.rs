//! The access log's hash chain.
//!
//! Every entry carries `hash = SHA-256(previous hash ‖ "\n" ‖ content)`,
//! hex, where `content` is the JSON array
//! `[seq, at, client, basis, purpose, person, endpoint, fields, criteria]`
//! of the entry's stored text (`fields` is the JSON text of the field list,
//! `criteria` the search's JSON text or null). The first chained entry's
//! previous hash is [`GENESIS`]. Changing, removing, reordering or
//! inserting an entry, or changing a shared field list, breaks the link of
//! that entry and every later one; rewriting the whole chain changes its
//! head, which is why heads are shipped elsewhere (`folkhub audit export`
//! writes one per day) and compared by `folkhub audit verify --against`.
//!
//! The chain is computed by folkhub, not by SQL triggers: SQLite has no
//! SHA-256 of its own, and a trigger is what a tamperer with the file can
//! drop anyway. Its strength is what is kept outside the database.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The previous hash of the first chained entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry as the chain sees it: the text the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub seq: i64,
    pub at: &'a str,
    pub client: &'a str,
    pub basis: &'a str,
    pub purpose: &'a str,
    pub person: i64,
    pub endpoint: &'a str,
    /// The JSON text of the field list.
    pub fields: &'a str,
    pub criteria: Option<&'a str>,
}

/// The hash of `link` after an entry whose hash is `previous`.
pub fn link_hash(previous: &str, link: &Link<'_>) -> String {
    let content = serde_json::json!([
        link.seq,
        link.at,
        link.client,
        link.basis,
        link.purpose,
        link.person,
        link.endpoint,
        link.fields,
        link.criteria
    ]);
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(b"\n");
    hasher.update(content.to_string().as_bytes());
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `folkhub audit verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Entries read.
    pub entries: u64,
    /// Entries written before the chain existed (schema before version 5);
    /// they come first and no hash covers them.
    pub before_chain: u64,
    /// The last entry's seq and hash, when the chain holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<ChainHead>,
    /// The first entry whose link does not match, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<BrokenLink>,
}

/// The end of the chain at some point: what a day's export keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

/// The first entry that does not belong where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub seq: i64,
    pub why: String,
}

/// Checks a chain as it is read, entry by entry, in seq order.
#[derive(Debug, Default)]
pub struct Verifier {
    report: ChainReport,
    previous: Option<(i64, String)>,
}

impl Verifier {
    /// Takes the next entry and its stored hash; false once broken.
    pub fn next(&mut self, link: &Link<'_>, stored: Option<&str>) -> bool {
        if self.report.broken.is_some() {
            return false;
        }
        self.report.entries += 1;
        let Some(stored) = stored else {
            if self.previous.is_none() {
                // Before the chain: only at the start.
                self.report.before_chain += 1;
                return true;
            }
            return self.broke(link.seq, "the entry has no hash although earlier ones do");
        };
        let previous = match &self.previous {
            Some((seq, hash)) => {
                if link.seq != seq + 1 {
                    return self.broke(
                        link.seq,
                        &format!("entries {} to {} are missing", seq + 1, link.seq - 1),
                    );
                }
                hash.as_str()
            }
            None => GENESIS,
        };
        let expected = link_hash(previous, link);
        if expected != stored {
            return self.broke(
                link.seq,
                "its content or the entry before it was changed (the hash does not match)",
            );
        }
        self.previous = Some((link.seq, stored.to_string()));
        true
    }

    fn broke(&mut self, seq: i64, why: &str) -> bool {
        self.report.broken = Some(BrokenLink {
            seq,
            why: why.to_string(),
        });
        false
    }

    /// The report: the head is the last entry checked while the chain held.
    pub fn finish(mut self) -> ChainReport {
        if self.report.broken.is_none() {
            self.report.head = self.previous.map(|(seq, hash)| ChainHead { seq, hash });
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(seq: i64, client: &str) -> Link<'_> {
        Link {
            seq,
            at: "2026-12-03T10:00:00.000000Z",
            client,
            basis: "school",
            purpose: "p",
            person: 7,
            endpoint: "GET /v1/persons/{id}",
            fields: r#"["name.family"]"#,
            criteria: None,
        }
    }

    #[test]
    fn a_chain_holds_and_any_edit_breaks_it_at_that_entry() {
        let mut hashes = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=5 {
            prev = link_hash(&prev, &link(seq, "a"));
            hashes.push(prev.clone());
        }
        let check = |edit: &dyn Fn(i64) -> (Link<'static>, Option<String>)| {
            let mut v = Verifier::default();
            for seq in 1..=5 {
                let (l, h) = edit(seq);
                v.next(&l, h.as_deref());
            }
            v.finish()
        };
        let whole = check(&|seq| (link(seq, "a"), Some(hashes[seq as usize - 1].clone())));
        assert_eq!(whole.broken, None);
        assert_eq!(whole.head.map(|h| h.seq), Some(5));
        // Entry 3 names another client.
        let edited = check(&|seq| {
            (
                link(seq, if seq == 3 { "b" } else { "a" }),
                Some(hashes[seq as usize - 1].clone()),
            )
        });
        assert_eq!(edited.broken.map(|b| b.seq), Some(3));
        // Entry 3's hash recomputed to hide the edit: entry 4 breaks.
        let rehashed = check(&|seq| {
            let l = link(seq, if seq == 3 { "b" } else { "a" });
            let h = if seq == 3 {
                link_hash(&hashes[1], &l)
            } else {
                hashes[seq as usize - 1].clone()
            };
            (l, Some(h))
        });
        assert_eq!(rehashed.broken.map(|b| b.seq), Some(4));
    }
}
