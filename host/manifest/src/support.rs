//! Support state of an installed release, computed from the registry's
//! breaking notes and a date (DESIGN §5).
//!
//! A newer release of the same connector with a `[release.breaking]` note
//! puts every older release on notice: the register retires their upstream
//! version on `upstream_sunset`, and installs must move by
//! `upgrade_deadline`. Before the deadline the installed release is
//! *deprecated* (warnings at 90, 30 and 7 days, pinned installs too); from
//! the deadline on it is *unsupported* and the note's `deadline_action`
//! applies. The date is a parameter so callers (and tests) choose the clock.

use chrono::NaiveDate;

use crate::registry::{Manifest, Release, semver};

/// Days before a deadline at which an admin is warned.
pub const WARN_DAYS: &[i64] = &[90, 30, 7];

/// Where an installed release stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupportState {
    Supported,
    /// A newer release breaks away; its deadline is ahead.
    Deprecated {
        /// The release whose note sets the deadline.
        by: String,
        deadline: NaiveDate,
        sunset: NaiveDate,
        days_left: i64,
        /// The warning step reached (90, 30 or 7), if any.
        warning: Option<i64>,
        action: String,
    },
    /// The deadline passed: `action` applies.
    Unsupported {
        by: String,
        deadline: NaiveDate,
        sunset: NaiveDate,
        action: String,
        /// Why, in words an admin can act on.
        reason: String,
    },
}

impl SupportState {
    /// A one-line summary for `connectors list`.
    pub fn summary(&self) -> String {
        match self {
            SupportState::Supported => "supported".into(),
            SupportState::Deprecated {
                by,
                deadline,
                days_left,
                ..
            } => format!("deprecated: upgrade to {by} by {deadline} ({days_left} days left)"),
            SupportState::Unsupported {
                by,
                deadline,
                action,
                ..
            } => format!("unsupported since {deadline} (action {action}; upgrade to {by})"),
        }
    }
}

/// The support state of `installed` on `today`.
pub fn support_state(manifest: &Manifest, installed: &Release, today: NaiveDate) -> SupportState {
    let mine = semver(&installed.version);
    let notice = manifest
        .releases_of(&installed.connector)
        .into_iter()
        .filter(|r| semver(&r.version) > mine && !crate::registry::is_prerelease(&r.version))
        .filter_map(|r| r.breaking.as_ref().map(|b| (r, b)))
        // Of several notices, the earliest deadline binds.
        .min_by_key(|(_, b)| b.upgrade_deadline);
    let Some((by, note)) = notice else {
        return SupportState::Supported;
    };
    let days_left = (note.upgrade_deadline - today).num_days();
    if days_left > 0 {
        return SupportState::Deprecated {
            by: by.version.clone(),
            deadline: note.upgrade_deadline,
            sunset: note.upstream_sunset,
            days_left,
            warning: WARN_DAYS.iter().rev().find(|d| days_left <= **d).copied(),
            action: note.deadline_action.clone(),
        };
    }
    let sunset = if today >= note.upstream_sunset {
        format!(
            "{} retired {} on {}",
            installed.upstream.system, installed.upstream.version, note.upstream_sunset
        )
    } else {
        format!(
            "{} retires {} on {}",
            installed.upstream.system, installed.upstream.version, note.upstream_sunset
        )
    };
    SupportState::Unsupported {
        by: by.version.clone(),
        deadline: note.upgrade_deadline,
        sunset: note.upstream_sunset,
        action: note.deadline_action.clone(),
        reason: format!(
            "the upgrade deadline {} set by release {} passed; {sunset}",
            note.upgrade_deadline, by.version
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn deadlines_warn_then_turn_unsupported() {
        let manifest = Manifest::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../registry-manifest.toml"),
        )
        .unwrap();
        let old = manifest.find("krr", Some("1.0.1")).unwrap();
        let newest = manifest.find("krr", None).unwrap();
        assert_eq!(
            support_state(&manifest, newest, day("2027-05-01")),
            SupportState::Supported
        );
        // The krr 2.0.0 note: deadline 2027-05-31, sunset 2027-06-30.
        let at = |d: &str| support_state(&manifest, old, day(d));
        let warning = |d: &str| match at(d) {
            SupportState::Deprecated { warning, .. } => warning,
            other => panic!("{other:?}"),
        };
        assert_eq!(warning("2027-01-01"), None);
        assert_eq!(warning("2027-03-02"), Some(90));
        assert_eq!(warning("2027-05-01"), Some(30));
        assert_eq!(warning("2027-05-24"), Some(7));
        match at("2027-05-30") {
            SupportState::Deprecated { days_left, by, .. } => {
                assert_eq!((days_left, by.as_str()), (1, "2.0.0"))
            }
            other => panic!("{other:?}"),
        }
        match at("2027-05-31") {
            SupportState::Unsupported { action, reason, .. } => {
                assert_eq!(action, "warn");
                assert!(reason.contains("2027-06-30"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            at("2027-07-01")
                .summary()
                .starts_with("unsupported since 2027-05-31")
        );
    }
}
