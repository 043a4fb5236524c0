//! Protection labels. They merge stricter-wins and travel with the fields
//! they protect.

use serde::{Deserialize, Serialize};

/// Norwegian address protection (adressebeskyttelse), ordered from least to
/// most strict so `max` is the stricter-wins merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protection {
    Ugradert,
    Klientadresse,
    Fortrolig,
    StrengtFortrolig,
    StrengtFortroligUtland,
}

impl Protection {
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Ugradert => "UGRADERT",
            Protection::Klientadresse => "KLIENTADRESSE",
            Protection::Fortrolig => "FORTROLIG",
            Protection::StrengtFortrolig => "STRENGT_FORTROLIG",
            Protection::StrengtFortroligUtland => "STRENGT_FORTROLIG_UTLAND",
        }
    }

    /// Reads a label; FREG's camelCase grading (`strengtFortrolig`) and the
    /// canonical upper-case form are both accepted.
    pub fn from_label(label: &str) -> Option<Self> {
        let normal: String = label
            .chars()
            .filter(|c| *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match normal.as_str() {
            "ugradert" => Protection::Ugradert,
            "klientadresse" => Protection::Klientadresse,
            "fortrolig" => Protection::Fortrolig,
            "strengtfortrolig" => Protection::StrengtFortrolig,
            "strengtfortroligutland" => Protection::StrengtFortroligUtland,
            _ => return None,
        })
    }
}

/// Labels from other countries' registers, kept as they are named there.
pub const SE_SECRECY: &str = "SEKRETESSMARKERING";
pub const SE_PROTECTED: &str = "SKYDDAD_FOLKBOKFORING";
pub const FI_NON_DISCLOSURE: &str = "TURVAKIELTO";

/// Merges two label sets: the union, with only the strictest NO grading kept.
pub fn merge(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut strictest: Option<Protection> = None;
    for label in a.iter().chain(b) {
        match Protection::from_label(label) {
            Some(p) => strictest = Some(strictest.map_or(p, |s| s.max(p))),
            None => {
                if !out.contains(label) {
                    out.push(label.clone());
                }
            }
        }
    }
    if let Some(p) = strictest.filter(|p| *p != Protection::Ugradert) {
        out.push(p.as_str().to_string());
    }
    out.sort();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn stricter_wins() {
        let merged = merge(
            &["FORTROLIG".into()],
            &["strengtFortrolig".into(), SE_SECRECY.into()],
        );
        assert_eq!(
            merged,
            vec![
                "SEKRETESSMARKERING".to_string(),
                "STRENGT_FORTROLIG".to_string()
            ]
        );
        assert!(merge(&["UGRADERT".into()], &[]).is_empty());
        assert!(Protection::Fortrolig < Protection::StrengtFortrolig);
    }
}
