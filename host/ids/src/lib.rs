//! Nordic person identifiers: parse, validate, normalise and describe.
//!
//! Norway: fødselsnummer (both mod-11 digits, the post-2032 rule for k1),
//! D-number (day+40), H-number (month+40), FH-number (first digit 8/9) and
//! synthetic test IDs (month+80 as Skatteetaten/Tenor issue them, month+40 as
//! NAV/Dolly do). Sweden: personnummer and samordningsnummer (day+60) in 10
//! or 12 digits with `-`/`+`. Finland: HETU with every century sign.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// What kind of identifier a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdScheme {
    /// Norwegian fødselsnummer (including synthetic ones).
    NoFnr,
    /// Norwegian D-number.
    NoDnr,
    /// Norwegian H-number (assistance number used in health services).
    NoHnr,
    /// Norwegian FH-number (national assistance number).
    NoFhnr,
    /// Swedish personnummer.
    SePnr,
    /// Swedish samordningsnummer.
    SeSnr,
    /// Finnish henkilötunnus.
    FiHetu,
}

impl IdScheme {
    /// The stable text name used in the database, the API and the WIT contract.
    pub fn as_str(self) -> &'static str {
        match self {
            IdScheme::NoFnr => "no-fnr",
            IdScheme::NoDnr => "no-dnr",
            IdScheme::NoHnr => "no-hnr",
            IdScheme::NoFhnr => "no-fhnr",
            IdScheme::SePnr => "se-pnr",
            IdScheme::SeSnr => "se-snr",
            IdScheme::FiHetu => "fi-hetu",
        }
    }

    /// Parses the text name; `None` for a scheme this host does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "no-fnr" => IdScheme::NoFnr,
            "no-dnr" => IdScheme::NoDnr,
            "no-hnr" => IdScheme::NoHnr,
            "no-fhnr" => IdScheme::NoFhnr,
            "se-pnr" => IdScheme::SePnr,
            "se-snr" => IdScheme::SeSnr,
            "fi-hetu" => IdScheme::FiHetu,
            _ => return None,
        })
    }

    /// The country the scheme belongs to (ISO 3166 alpha-2).
    pub fn country(self) -> &'static str {
        match self {
            IdScheme::NoFnr | IdScheme::NoDnr | IdScheme::NoHnr | IdScheme::NoFhnr => "NO",
            IdScheme::SePnr | IdScheme::SeSnr => "SE",
            IdScheme::FiHetu => "FI",
        }
    }
}

impl fmt::Display for IdScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated, normalised person identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PersonId {
    pub scheme: IdScheme,
    /// Normalised form: NO 11 digits; SE 12 digits `YYYYMMDDNNNC`; FI `DDMMYYCNNNT` upper case.
    pub value: String,
    /// Birth date encoded in the ID, when the scheme encodes one.
    pub birth_date: Option<NaiveDate>,
    /// True for synthetic test IDs (NO month+80/+40 test numbers, FI 900–999).
    pub synthetic: bool,
}

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// Why a text is not a valid person ID. Each variant says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("the ID is empty")]
    Empty,
    #[error("'{input}' has {found} characters; {expected}")]
    Length {
        input: String,
        found: usize,
        expected: &'static str,
    },
    #[error("'{input}' contains '{character}' at position {position}; {expected}")]
    Character {
        input: String,
        character: char,
        position: usize,
        expected: &'static str,
    },
    #[error("'{input}' encodes the date {date}, which does not exist")]
    Date { input: String, date: String },
    #[error("'{input}' has a wrong check digit: expected {expected}, found {found}")]
    CheckDigit {
        input: String,
        expected: String,
        found: String,
    },
    #[error(
        "'{input}' uses the century sign '{sign}', which HETU does not define (use + - Y X W V U A B C D E F)"
    )]
    CenturySign { input: String, sign: char },
    #[error("{detail} (read as {reading}; prefix no:, se: or fi: to choose)")]
    Reading {
        reading: &'static str,
        detail: Box<IdError>,
    },
    #[error("'{input}' is not a Norwegian, Swedish or Finnish person ID: {reason}")]
    Unrecognised { input: String, reason: String },
}

/// Parses any Nordic ID. A `no:`, `se:` or `fi:` prefix forces the country;
/// without one, the shape decides (11 digits: NO; 10 or 12 digits, or a
/// `-`/`+` between date and number: SE; a HETU century sign: FI).
pub fn parse(input: &str) -> Result<PersonId, IdError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(IdError::Empty);
    }
    if let Some(rest) = strip_prefix_ci(trimmed, "no:") {
        return parse_norwegian(rest);
    }
    if let Some(rest) = strip_prefix_ci(trimmed, "se:") {
        return parse_swedish(rest);
    }
    if let Some(rest) = strip_prefix_ci(trimmed, "fi:") {
        return parse_finnish(rest);
    }
    let chars: Vec<char> = trimmed.chars().collect();
    let all_digits = chars.iter().all(|c| c.is_ascii_digit());
    match chars.len() {
        11 if all_digits => parse_norwegian(trimmed),
        10 | 12 if all_digits => parse_swedish(trimmed).map_err(|e| IdError::Reading {
            reading: "a Swedish personnummer (10 or 12 digits)",
            detail: Box::new(e),
        }),
        11 | 13 if matches!(chars[chars.len() - 5], '-' | '+') && chars.len() == 13 => {
            parse_swedish(trimmed)
        }
        11 => {
            // Both `YYMMDD-NNNC` (SE) and `DDMMYY-NNNT` (FI) have 11
            // characters. A HETU may end in a letter and may use signs other
            // than -/+; when both readings are valid we refuse to guess.
            let sign = chars[6];
            if !matches!(sign, '-' | '+') {
                return parse_finnish(trimmed);
            }
            match (parse_swedish(trimmed), parse_finnish(trimmed)) {
                (Ok(se), Err(_)) => Ok(se),
                (Err(_), Ok(fi)) => Ok(fi),
                (Ok(_), Ok(_)) => Err(IdError::Unrecognised {
                    input: trimmed.to_string(),
                    reason: "it is valid both as a Swedish personnummer and as a Finnish HETU; prefix it with se: or fi:".into(),
                }),
                (Err(se), Err(fi)) => Err(IdError::Unrecognised {
                    input: trimmed.to_string(),
                    reason: format!("as a Swedish ID: {se}; as a Finnish HETU: {fi}"),
                }),
            }
        }
        n => {
            if let Some((position, character)) = chars
                .iter()
                .enumerate()
                .find(|(_, c)| !c.is_ascii_alphanumeric() && !matches!(c, '-' | '+'))
            {
                return Err(IdError::Character {
                    input: trimmed.to_string(),
                    character: *character,
                    position: position + 1,
                    expected: "IDs contain digits, and for SE/FI a separator",
                });
            }
            Err(IdError::Length {
                input: trimmed.to_string(),
                found: n,
                expected: "expected 11 digits (NO), 10 or 12 digits (SE) or 11 characters DDMMYYCNNNT (FI)",
            })
        }
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`, not indexing: the prefix's length may fall inside a character
    // ("seƙ…" panicked, found by `cargo xtask fuzz ids`).
    match text.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => text.get(prefix.len()..),
        _ => None,
    }
}

fn digits(input: &str, expected: &'static str) -> Result<Vec<u32>, IdError> {
    input
        .chars()
        .enumerate()
        .map(|(position, character)| {
            character.to_digit(10).ok_or(IdError::Character {
                input: input.to_string(),
                character,
                position: position + 1,
                expected,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- Norway

const NO_K1_WEIGHTS: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
const NO_K2_WEIGHTS: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

/// Computes the classic (pre-2032) first control digit, `None` when it would be 10.
pub fn norwegian_k1(first_nine: &[u32]) -> Option<u32> {
    let sum: u32 = first_nine
        .iter()
        .zip(NO_K1_WEIGHTS)
        .map(|(d, w)| d * w)
        .sum();
    mod11_digit(sum)
}

/// Computes the second control digit over the first ten digits, `None` when it would be 10.
pub fn norwegian_k2(first_ten: &[u32]) -> Option<u32> {
    let sum: u32 = first_ten
        .iter()
        .zip(NO_K2_WEIGHTS)
        .map(|(d, w)| d * w)
        .sum();
    mod11_digit(sum)
}

fn mod11_digit(sum: u32) -> Option<u32> {
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        k => Some(k),
    }
}

/// Parses a Norwegian 11-digit ID of any kind.
pub fn parse_norwegian(input: &str) -> Result<PersonId, IdError> {
    let input = input.trim();
    let found = input.chars().count();
    let d = digits(input, "a Norwegian ID has 11 digits")?;
    if found != 11 {
        return Err(IdError::Length {
            input: input.to_string(),
            found,
            expected: "a Norwegian fødselsnummer or D-number has 11 digits",
        });
    }
    // Check digits first: a typo is the most common error and the clearest message.
    let k1_sum: u32 = d[..9].iter().zip(NO_K1_WEIGHTS).map(|(a, w)| a * w).sum();
    // From 2032 new numbers may use any k1 with (sum + k1) mod 11 in {0,1,2,3};
    // the classic rule is the {0} case, so this accepts both.
    if !matches!((k1_sum + d[9]) % 11, 0..=3) {
        let expected = norwegian_k1(&d[..9])
            .map_or("none (the first nine digits give 10)".to_string(), |k| {
                k.to_string()
            });
        return Err(IdError::CheckDigit {
            input: input.to_string(),
            expected,
            found: d[9].to_string(),
        });
    }
    match norwegian_k2(&d[..10]) {
        Some(k2) if k2 == d[10] => {}
        expected => {
            return Err(IdError::CheckDigit {
                input: input.to_string(),
                expected: expected.map_or("none (the first ten digits give 10)".to_string(), |k| {
                    k.to_string()
                }),
                found: d[10].to_string(),
            });
        }
    }

    let mut day = d[0] * 10 + d[1];
    let mut month = d[2] * 10 + d[3];
    let year2 = d[4] * 10 + d[5];
    let individual = d[6] * 100 + d[7] * 10 + d[8];

    if d[0] >= 8 {
        // FH-number: random digits, no date.
        return Ok(PersonId {
            scheme: IdScheme::NoFhnr,
            value: input.to_string(),
            birth_date: None,
            synthetic: false,
        });
    }
    let mut scheme = IdScheme::NoFnr;
    let mut synthetic = false;
    if day > 40 {
        scheme = IdScheme::NoDnr;
        day -= 40;
    }
    if month > 80 {
        synthetic = true;
        month -= 80;
    } else if month > 40 {
        // Month+40 is both the H-number shape and NAV/Dolly synthetic IDs;
        // they cannot be told apart by the digits, so we call it an H-number.
        if scheme == IdScheme::NoFnr {
            scheme = IdScheme::NoHnr;
        }
        month -= 40;
    }
    let year = norwegian_century(year2, individual).map(|c| c + year2 as i32);
    let birth_date = match year {
        Some(year) => NaiveDate::from_ymd_opt(year, month, day),
        None => None,
    };
    if birth_date.is_none() {
        // After 2032 numbers need not encode a valid date; before, they must.
        // We are strict: an impossible date is far more often a typo.
        return Err(IdError::Date {
            input: input.to_string(),
            date: format!("{day:02}.{month:02}.{year2:02} (individual number {individual:03})"),
        });
    }
    Ok(PersonId {
        scheme,
        value: input.to_string(),
        birth_date,
        synthetic,
    })
}

fn norwegian_century(year2: u32, individual: u32) -> Option<i32> {
    match individual {
        0..=499 => Some(1900),
        500..=749 if year2 >= 54 => Some(1800),
        500..=999 if year2 <= 39 => Some(2000),
        900..=999 if year2 >= 40 => Some(1900),
        _ => None,
    }
}

/// Builds a valid Norwegian ID from a date, individual number and kind.
/// Returns `None` when this individual number gives no valid check digits
/// (about one in six do); try the next one.
pub fn make_norwegian(
    date: NaiveDate,
    individual: u32,
    d_number: bool,
    synthetic_plus80: bool,
) -> Option<String> {
    let day = date.day() + if d_number { 40 } else { 0 };
    let month = date.month() + if synthetic_plus80 { 80 } else { 0 };
    let year2 = (date.year() % 100) as u32;
    let text = format!("{day:02}{month:02}{year2:02}{individual:03}");
    let mut d: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    let k1 = norwegian_k1(&d)?;
    d.push(k1);
    let k2 = norwegian_k2(&d)?;
    Some(format!("{text}{k1}{k2}"))
}

/// Picks a Norwegian individual number range for a birth year (pre-2032 rules).
pub fn norwegian_individual_range(year: i32) -> std::ops::RangeInclusive<u32> {
    match year {
        1854..=1899 => 500..=749,
        1900..=1939 => 0..=499,
        1940..=1999 => 0..=499,
        _ => 500..=999,
    }
}

// ---------------------------------------------------------------- Sweden

fn luhn_digit(nine: &[u32]) -> u32 {
    let sum: u32 = nine
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let p = if i % 2 == 0 { d * 2 } else { d };
            p / 10 + p % 10
        })
        .sum();
    (10 - sum % 10) % 10
}

/// Parses a Swedish personnummer or samordningsnummer, 10 or 12 digits, with
/// or without `-` (`+` marks age 100 or more in the 10-digit form).
/// `today` decides the century of a 10-digit number.
pub fn parse_swedish_at(input: &str, today: NaiveDate) -> Result<PersonId, IdError> {
    let input = input.trim();
    let chars: Vec<char> = input.chars().collect();
    let (body, separator): (String, Option<char>) = match chars.len() {
        10 | 12 => (input.to_string(), None),
        11 | 13 if matches!(chars[chars.len() - 5], '-' | '+') => {
            // Only the separator before the last four goes: any other sign
            // is a wrong character below (found by `cargo xtask fuzz ids`:
            // "81818+++181" lost all three and left eight digits).
            let at = chars.len() - 5;
            (
                chars
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != at)
                    .map(|(_, c)| *c)
                    .collect(),
                Some(chars[at]),
            )
        }
        n => {
            return Err(IdError::Length {
                input: input.to_string(),
                found: n,
                expected: "a Swedish ID is YYMMDD-NNNC, YYMMDDNNNC or YYYYMMDDNNNC",
            });
        }
    };
    let d = digits(
        &body,
        "a Swedish ID has digits and one - or + before the last four",
    )?;
    let (century, ten): (Option<i32>, &[u32]) = if d.len() == 12 {
        (Some((d[0] * 1000 + d[1] * 100) as i32), &d[2..])
    } else {
        (None, &d[..])
    };
    let expected = luhn_digit(&ten[..9]);
    if expected != ten[9] {
        return Err(IdError::CheckDigit {
            input: input.to_string(),
            expected: expected.to_string(),
            found: ten[9].to_string(),
        });
    }
    let year2 = (ten[0] * 10 + ten[1]) as i32;
    let month = ten[2] * 10 + ten[3];
    let mut day = ten[4] * 10 + ten[5];
    let mut scheme = IdScheme::SePnr;
    if day > 60 {
        scheme = IdScheme::SeSnr;
        day -= 60;
    }
    let year = match century {
        Some(c) => c + year2,
        None => {
            // The person is at most 99 years old with '-', 100 or more with '+'.
            let mut year = today.year() - today.year() % 100 + year2;
            let birthday_passed =
                |y: i32| NaiveDate::from_ymd_opt(y, month, day.max(1)).is_some_and(|b| b <= today);
            if !birthday_passed(year) && year > today.year() - 1 || year > today.year() {
                year -= 100;
            }
            if separator == Some('+') {
                year -= 100;
            }
            year
        }
    };
    let Some(birth_date) = NaiveDate::from_ymd_opt(year, month, day) else {
        return Err(IdError::Date {
            input: input.to_string(),
            date: format!("{year:04}-{month:02}-{day:02}"),
        });
    };
    let value = format!(
        "{year:04}{}",
        ten[2..]
            .iter()
            .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
            .collect::<String>()
    );
    Ok(PersonId {
        scheme,
        value,
        birth_date: Some(birth_date),
        synthetic: false,
    })
}

/// [`parse_swedish_at`] with today's date.
pub fn parse_swedish(input: &str) -> Result<PersonId, IdError> {
    parse_swedish_at(input, chrono::Local::now().date_naive())
}

/// Builds a 12-digit Swedish ID from a date and three-digit birth number.
pub fn make_swedish(date: NaiveDate, birth_number: u32, samordning: bool) -> String {
    let day = date.day() + if samordning { 60 } else { 0 };
    let ten = format!(
        "{:02}{:02}{day:02}{birth_number:03}",
        date.year() % 100,
        date.month()
    );
    let d: Vec<u32> = ten.chars().filter_map(|c| c.to_digit(10)).collect();
    format!(
        "{}{:02}{:02}{day:02}{birth_number:03}{}",
        date.year() / 100,
        date.year() % 100,
        date.month(),
        luhn_digit(&d)
    )
}

/// The 10-digit display form `YYMMDD-NNNC` (`+` from the year the person turns 100).
pub fn swedish_display(twelve: &str, today: NaiveDate) -> String {
    let year: i32 = twelve[..4].parse().unwrap_or(0);
    let sep = if today.year() - year >= 100 { '+' } else { '-' };
    format!("{}{sep}{}", &twelve[2..8], &twelve[8..])
}

// ---------------------------------------------------------------- Finland

const HETU_CHECK: &[u8; 31] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";

fn hetu_century(sign: char) -> Option<i32> {
    Some(match sign {
        '+' => 1800,
        '-' | 'Y' | 'X' | 'W' | 'V' | 'U' => 1900,
        'A' | 'B' | 'C' | 'D' | 'E' | 'F' => 2000,
        _ => return None,
    })
}

/// Parses a Finnish HETU `DDMMYYCNNNT`.
pub fn parse_finnish(input: &str) -> Result<PersonId, IdError> {
    let input = input.trim();
    let upper = input.to_ascii_uppercase();
    let chars: Vec<char> = upper.chars().collect();
    if chars.len() != 11 {
        return Err(IdError::Length {
            input: input.to_string(),
            found: chars.len(),
            expected: "a HETU has 11 characters: DDMMYY, a century sign, NNN and a check character",
        });
    }
    let date_part: String = chars[..6].iter().collect();
    let number_part: String = chars[7..10].iter().collect();
    digits(&date_part, "a HETU starts with six digits DDMMYY")?;
    let individual = digits(
        &number_part,
        "a HETU has three digits after the century sign",
    )
    .map_err(|e| match e {
        IdError::Character {
            input,
            character,
            position,
            expected,
        } => IdError::Character {
            input,
            character,
            position: position + 7,
            expected,
        },
        other => other,
    })?;
    let sign = chars[6];
    let Some(century) = hetu_century(sign) else {
        return Err(IdError::CenturySign {
            input: input.to_string(),
            sign,
        });
    };
    let number: u64 = format!("{date_part}{number_part}").parse().unwrap_or(0);
    let expected = HETU_CHECK[(number % 31) as usize] as char;
    if chars[10] != expected {
        return Err(IdError::CheckDigit {
            input: input.to_string(),
            expected: expected.to_string(),
            found: chars[10].to_string(),
        });
    }
    let day: u32 = date_part[0..2].parse().unwrap_or(0);
    let month: u32 = date_part[2..4].parse().unwrap_or(0);
    let year = century + date_part[4..6].parse::<i32>().unwrap_or(0);
    let Some(birth_date) = NaiveDate::from_ymd_opt(year, month, day) else {
        return Err(IdError::Date {
            input: input.to_string(),
            date: format!("{year:04}-{month:02}-{day:02}"),
        });
    };
    let individual = individual[0] * 100 + individual[1] * 10 + individual[2];
    Ok(PersonId {
        scheme: IdScheme::FiHetu,
        value: upper,
        birth_date: Some(birth_date),
        synthetic: individual >= 900,
    })
}

/// Builds a HETU from a date and individual number (century sign `-` or `A`).
pub fn make_finnish(date: NaiveDate, individual: u32) -> String {
    let sign = if date.year() >= 2000 {
        'A'
    } else if date.year() >= 1900 {
        '-'
    } else {
        '+'
    };
    build_finnish(date, individual, sign)
}

/// Builds a HETU with a given century sign (the signs added in 2023:
/// `Y X W V U` for the 1900s, `B C D E F` for the 2000s). The sign must fit
/// the century of `date`; otherwise the century's default sign is used.
pub fn make_finnish_with_sign(date: NaiveDate, individual: u32, sign: char) -> String {
    let fits = match sign {
        '+' => (1800..1900).contains(&date.year()),
        '-' | 'Y' | 'X' | 'W' | 'V' | 'U' => (1900..2000).contains(&date.year()),
        'A'..='F' => (2000..2100).contains(&date.year()),
        _ => false,
    };
    if !fits {
        return make_finnish(date, individual);
    }
    build_finnish(date, individual, sign)
}

fn build_finnish(date: NaiveDate, individual: u32, sign: char) -> String {
    let dd = format!(
        "{:02}{:02}{:02}",
        date.day(),
        date.month(),
        date.year() % 100
    );
    let number: u64 = format!("{dd}{individual:03}").parse().unwrap_or(0);
    format!(
        "{dd}{sign}{individual:03}{}",
        HETU_CHECK[(number % 31) as usize] as char
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn published_norwegian_vectors() {
        let classic = parse("20036914700").unwrap();
        assert_eq!(classic.scheme, IdScheme::NoFnr);
        assert_eq!(classic.birth_date, Some(date(1969, 3, 20)));
        let d = parse("55102499947").unwrap();
        assert_eq!(d.scheme, IdScheme::NoDnr);
        // 2032-rule vectors (synthetic, may use a non-classic k1)
        assert!(parse("30108299939").is_ok());
        assert!(parse("30908299902").is_ok());
        let tenor = parse("03851598730").unwrap();
        assert!(tenor.synthetic);
        assert_eq!(tenor.birth_date, Some(date(2015, 5, 3)));
    }

    #[test]
    fn norwegian_errors_say_what_is_wrong() {
        assert!(matches!(
            parse("20036914701"),
            Err(IdError::CheckDigit { .. })
        ));
        assert!(matches!(
            parse_norwegian("2003691470"),
            Err(IdError::Length { found: 10, .. })
        ));
        assert!(matches!(
            parse_norwegian("2003691470A"),
            Err(IdError::Character { position: 11, .. })
        ));
        assert!(matches!(
            parse("abc"),
            Err(IdError::Length { .. }) | Err(IdError::Character { .. })
        ));
        let message = parse("20036914701").unwrap_err().to_string();
        assert!(message.contains("check digit"), "{message}");
    }

    #[test]
    fn norwegian_round_trip_and_single_digit_errors() {
        let mut made = 0;
        for (i, year) in (1940..2030).step_by(7).enumerate() {
            let birth = date(year, (i % 12) as u32 + 1, (i % 28) as u32 + 1);
            for individual in norwegian_individual_range(year).step_by(37) {
                for (dnr, synth) in [(false, false), (true, false), (false, true)] {
                    let Some(id) = make_norwegian(birth, individual, dnr, synth) else {
                        continue;
                    };
                    let parsed = parse(&id).unwrap_or_else(|e| panic!("{id}: {e}"));
                    assert_eq!(parsed.birth_date, Some(birth), "{id}");
                    assert_eq!(
                        parsed.scheme,
                        if dnr {
                            IdScheme::NoDnr
                        } else {
                            IdScheme::NoFnr
                        }
                    );
                    made += 1;
                    // Changing the second check digit is always caught.
                    let mut bytes = id.clone().into_bytes();
                    bytes[10] = b'0' + (bytes[10] - b'0' + 1) % 10;
                    let changed = String::from_utf8(bytes).unwrap();
                    assert!(parse(&changed).is_err(), "{changed} should fail");
                }
            }
        }
        assert!(made > 300);
    }

    /// Inputs `cargo xtask fuzz ids` found panicking (also seeds of that
    /// target): every reader refuses them with an error.
    #[test]
    fn fuzzed_inputs_are_errors_not_panics() {
        for input in [
            "81818+++181",
            "8181++-+1811",
            "1+1+1+1-1+1",
            "8181818+++181",
            "seƙ1234567890",
            "nø",
            "fé:131052-308T",
        ] {
            assert!(parse(input).is_err(), "{input}");
            assert!(parse_swedish(input).is_err(), "{input}");
            assert!(parse_finnish(input).is_err(), "{input}");
            assert!(parse_norwegian(input).is_err(), "{input}");
        }
    }

    #[test]
    fn swedish_forms() {
        let today = date(2026, 11, 22);
        // 811218-9876 is the well-known Skatteverket example shape.
        let id = make_swedish(date(1981, 12, 18), 987, false);
        let p = parse_swedish_at(&id, today).unwrap();
        assert_eq!(p.value, id);
        let ten = swedish_display(&id, today);
        assert_eq!(parse_swedish_at(&ten, today).unwrap().value, id);
        let old = make_swedish(date(1920, 1, 5), 123, false);
        let display = swedish_display(&old, today);
        assert!(display.contains('+'));
        assert_eq!(parse_swedish_at(&display, today).unwrap().value, old);
        let s = make_swedish(date(1990, 4, 1), 234, true);
        assert_eq!(parse_swedish_at(&s, today).unwrap().scheme, IdScheme::SeSnr);
        let mut bad = id.clone().into_bytes();
        bad[11] = b'0' + (bad[11] - b'0' + 1) % 10;
        assert!(matches!(
            parse_swedish_at(std::str::from_utf8(&bad).unwrap(), today),
            Err(IdError::CheckDigit { .. })
        ));
    }

    #[test]
    fn finnish_vectors_and_signs() {
        for ok in ["010280-952L", "010469-999W", "010594Y9032", "020516C902J"] {
            let p = parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(p.scheme, IdScheme::FiHetu);
        }
        assert!(matches!(
            parse_finnish("010280G952L"),
            Err(IdError::CenturySign { sign: 'G', .. })
        ));
        assert!(matches!(
            parse_finnish("010280-952M"),
            Err(IdError::CheckDigit { .. })
        ));
        let made = make_finnish(date(2005, 7, 9), 905);
        assert_eq!(parse(&made).unwrap().birth_date, Some(date(2005, 7, 9)));
    }

    /// Generate → validate round trips over many dates and numbers, and every
    /// single-digit change of a generated ID is caught (SE and FI; NO above).
    #[test]
    fn swedish_and_finnish_round_trips_catch_single_digit_changes() {
        let today = date(2026, 11, 22);
        let mut checked = 0;
        for (i, year) in (1925..2025).step_by(3).enumerate() {
            let birth = date(year, (i % 12) as u32 + 1, (i * 7 % 28) as u32 + 1);
            for number in (2..999).step_by(97) {
                for samordning in [false, true] {
                    let id = make_swedish(birth, number, samordning);
                    let parsed =
                        parse_swedish_at(&id, today).unwrap_or_else(|e| panic!("{id}: {e}"));
                    assert_eq!(parsed.birth_date, Some(birth));
                    assert_eq!(
                        parse_swedish_at(&swedish_display(&id, today), today)
                            .unwrap()
                            .value,
                        id
                    );
                    // Luhn catches every single-digit change in the last ten digits.
                    for pos in 2..12 {
                        let mut bytes = id.clone().into_bytes();
                        bytes[pos] = b'0' + (bytes[pos] - b'0' + 1) % 10;
                        let changed = String::from_utf8(bytes).unwrap();
                        if let Ok(p) = parse_swedish_at(&changed, today) {
                            panic!("{changed} (from {id}) was accepted as {}", p.value);
                        }
                    }
                    checked += 1;
                }
                // Every century sign, including those introduced in 2023.
                let signs: &[char] = if year >= 2000 {
                    &['A', 'B', 'C', 'D', 'E', 'F']
                } else {
                    &['-', 'Y', 'X', 'W', 'V', 'U']
                };
                let sign = signs[i % signs.len()];
                let hetu = make_finnish_with_sign(birth, number, sign);
                assert_eq!(hetu.chars().nth(6), Some(sign), "{hetu}");
                assert_eq!(
                    parse(&format!("fi:{hetu}")).unwrap().birth_date,
                    Some(birth),
                    "{hetu}"
                );
                for pos in [0, 1, 2, 3, 4, 5, 7, 8, 9] {
                    let mut chars: Vec<char> = hetu.chars().collect();
                    chars[pos] =
                        char::from_digit((chars[pos].to_digit(10).unwrap() + 1) % 10, 10).unwrap();
                    let changed: String = chars.into_iter().collect();
                    assert!(
                        parse_finnish(&changed).is_err(),
                        "{changed} (from {hetu}) was accepted"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn norwegian_kinds() {
        // Builds an ID from nine digits, or None when a check digit would be 10.
        let finish = |nine: &str| -> Option<String> {
            let mut d: Vec<u32> = nine.chars().filter_map(|c| c.to_digit(10)).collect();
            d.push(norwegian_k1(&d)?);
            d.push(norwegian_k2(&d)?);
            Some(d.iter().filter_map(|x| char::from_digit(*x, 10)).collect())
        };
        // H-number: month + 40.
        let h = (100..200)
            .find_map(|n| finish(&format!("1244800{n:02}").chars().take(9).collect::<String>()))
            .unwrap();
        let p = parse(&h).unwrap_or_else(|e| panic!("{h}: {e}"));
        assert_eq!(
            (p.scheme, p.birth_date),
            (IdScheme::NoHnr, Some(date(1980, 4, 12))),
            "{h}"
        );
        // FH-numbers start with 8 or 9 and carry no date.
        let fh = (0..1000)
            .find_map(|n| finish(&format!("8{:08}", 12_345_000 + n)))
            .unwrap();
        let p = parse(&fh).unwrap();
        assert_eq!((p.scheme, p.birth_date), (IdScheme::NoFhnr, None));
        assert!(matches!(
            parse("31028012345"),
            Err(IdError::CheckDigit { .. }) | Err(IdError::Date { .. })
        ));
    }
}
