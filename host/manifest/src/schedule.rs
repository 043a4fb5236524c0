//! Job schedules: an interval (`every = "15m"`) or a cron expression
//! (`cron = "0 2 * * *"`: minute hour day-of-month month day-of-week, UTC;
//! each field `*`, `N`, `A-B`, lists with `,`, steps with `/`; day of week
//! 0–6 with Sunday 0 or 7).

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    any_day: bool,
    any_weekday: bool,
}

fn field(text: &str, min: u32, max: u32, what: &str) -> Result<Vec<bool>, String> {
    let mut set = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what}: step {s:?} is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let n = |x: &str| {
                x.parse::<u32>()
                    .map_err(|_| format!("{what}: {x:?} is not a number"))
            };
            (n(a)?, n(b)?)
        } else {
            let n = range
                .parse::<u32>()
                .map_err(|_| format!("{what}: {range:?} is not a number"))?;
            (n, if part.contains('/') { max } else { n })
        };
        if a < min || b > max || a > b {
            return Err(format!("{what}: {range:?} is outside {min}-{max}"));
        }
        for v in (a..=b).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok(set)
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = parts[..] else {
            return Err(format!(
                "{text:?} has {} fields; a cron expression has 5: minute hour day-of-month month day-of-week",
                parts.len()
            ));
        };
        let mut weekdays = field(dow, 0, 7, "day of week")?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Cron {
            minutes: field(m, 0, 59, "minute")?,
            hours: field(h, 0, 23, "hour")?,
            days: field(dom, 1, 31, "day of month")?,
            months: field(mon, 1, 12, "month")?,
            weekdays,
            any_day: dom == "*",
            any_weekday: dow == "*",
        })
    }

    fn matches(&self, t: DateTime<Utc>) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        // As in cron: when both day fields are restricted, either may match.
        let day_ok = match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => weekday,
            (false, true) => day,
            (false, false) => day || weekday,
        };
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.months[t.month() as usize]
            && day_ok
    }

    /// The first minute after `after` the expression matches (within 4 years).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let end = after + Duration::days(4 * 366);
        while t < end {
            if !self.months[t.month() as usize] {
                // Skip to the first minute of the next month.
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = chrono::NaiveDate::from_ymd_opt(y, m, 1)?
                    .and_hms_opt(0, 0, 0)?
                    .and_utc();
                continue;
            }
            if self.matches(t) {
                return Some(t);
            }
            t += Duration::minutes(1);
        }
        None
    }
}

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(Duration),
    Cron(Cron),
}

impl Schedule {
    /// The next run after the last one (or after `now` when it never ran).
    pub fn next(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(d) => last.map_or(now, |l| (l + *d).max(now)),
            Schedule::Cron(c) => c
                .next_after(last.unwrap_or(now).max(now - Duration::minutes(1)))
                .unwrap_or(now + Duration::days(366)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn cron_expressions() {
        let nightly = Cron::parse("0 2 * * *").unwrap();
        assert_eq!(
            nightly.next_after(at("2026-11-22T21:31:00Z")),
            Some(at("2026-11-23T02:00:00Z"))
        );
        let quarter = Cron::parse("*/15 8-16 * * 1-5").unwrap();
        // Sunday evening → Monday 08:00.
        assert_eq!(
            quarter.next_after(at("2026-11-22T21:31:00Z")),
            Some(at("2026-11-23T08:00:00Z"))
        );
        assert_eq!(
            quarter.next_after(at("2026-11-23T08:00:00Z")),
            Some(at("2026-11-23T08:15:00Z"))
        );
        let monthly = Cron::parse("30 3 1 * *").unwrap();
        assert_eq!(
            monthly.next_after(at("2026-11-22T00:00:00Z")),
            Some(at("2026-12-01T03:30:00Z"))
        );
        let sunday = Cron::parse("0 0 * * 7").unwrap();
        assert_eq!(
            sunday.next_after(at("2026-11-23T00:00:00Z")),
            Some(at("2026-11-29T00:00:00Z"))
        );
        for bad in [
            "0 2 * *",
            "61 * * * *",
            "* * * * 8",
            "*/0 * * * *",
            "a * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn intervals_run_at_once_then_every() {
        let every = Schedule::Every(Duration::minutes(15));
        let now = at("2026-11-22T21:00:00Z");
        assert_eq!(every.next(None, now), now);
        assert_eq!(every.next(Some(now), now), at("2026-11-22T21:15:00Z"));
        // A host that was down runs the overdue job at once.
        assert_eq!(every.next(Some(at("2026-11-20T00:00:00Z")), now), now);
    }
}
