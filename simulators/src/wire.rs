//! The registers' published wire formats as data, and a checker that holds
//! any answer to them.
//!
//! `simulators/wire/*.toml` list, for each register and version, every
//! element (XML) or member (JSON) an answer may hold: its namespace, where
//! it may stand and the type of its value, each table citing the published
//! schema or documentation it was written from (`docs/simulators.md` lists
//! them). The tables are written by hand from those sources, not from the
//! simulators or the connectors, so checking the simulators' answers (and
//! the hand-written fidelity corpus) against them catches a simulator that
//! merely agrees with a connector.
//!
//! What is checked: every element's namespace and name is in the table,
//! it stands under a parent the table allows, its attributes are known, and
//! its text has the table's type. Order and cardinality are not checked.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One register version's table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub register: String,
    pub version: String,
    pub repository: String,
    /// A table this one extends: its namespaces and elements, with this
    /// table's namespaces replacing the base's of the same short name.
    #[serde(default)]
    pub based_on: Option<String>,
    /// Short name → namespace.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Namespace>,
    #[serde(default, rename = "element")]
    pub elements: Vec<Element>,
    #[serde(default, rename = "member")]
    pub members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub uri: String,
    /// The schema file (or document) the namespace is defined in.
    pub file: String,
}

/// An XML element: `short:Name`, where it may stand, its type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Element {
    pub name: String,
    /// `short:Name` of the allowed parents; empty: the document root.
    pub parents: Vec<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub attributes: Vec<String>,
}

/// A JSON member: its path from the answer's root (`personer[].status`),
/// its type, and the document that says so.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
}

/// The tables, compiled into the simulator so every test reads the same.
pub const TABLES: &[(&str, &str)] = &[
    ("spar-2021.1", include_str!("../wire/spar-2021.1.toml")),
    ("spar-2023.1", include_str!("../wire/spar-2023.1.toml")),
    ("vtj-kysely", include_str!("../wire/vtj-kysely.toml")),
    ("krr-v1", include_str!("../wire/krr-v1.toml")),
    ("krr-v2", include_str!("../wire/krr-v2.toml")),
];

/// A table by name (`spar-2021.1`, `vtj-kysely`, `krr-v2`, ...).
pub fn table(name: &str) -> Result<Table, String> {
    let text = TABLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("no wire table {name}"))?;
    let mut table: Table = toml::from_str(text).map_err(|e| format!("wire table {name}: {e}"))?;
    if let Some(base) = table.based_on.clone() {
        let mut base = self::table(&base)?;
        base.namespaces.append(&mut table.namespaces);
        table.namespaces = base.namespaces;
        table.elements.append(&mut base.elements);
        table.members.append(&mut base.members);
    }
    Ok(table)
}

impl Table {
    fn resolve(&self, short: &str) -> Result<(String, String), String> {
        let (prefix, name) = short
            .split_once(':')
            .ok_or_else(|| format!("{short}: element names are prefix:Name"))?;
        let ns = self
            .namespaces
            .get(prefix)
            .ok_or_else(|| format!("{short}: no namespace {prefix} in the table"))?;
        Ok((ns.uri.clone(), name.to_string()))
    }

    /// Checks an XML document against the table; every problem is listed.
    pub fn check_xml(&self, xml: &str) -> Result<(), Vec<String>> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| vec![format!("not XML: {e}")])?;
        let mut index: BTreeMap<(String, String), &Element> = BTreeMap::new();
        let mut problems = Vec::new();
        for e in &self.elements {
            match self.resolve(&e.name) {
                Ok(key) => {
                    index.insert(key, e);
                }
                Err(p) => problems.push(p),
            }
        }
        for node in doc.descendants().filter(|n| n.is_element()) {
            let key = (
                node.tag_name().namespace().unwrap_or_default().to_string(),
                node.tag_name().name().to_string(),
            );
            let place = describe(node);
            let Some(element) = index.get(&key) else {
                problems.push(format!(
                    "{place}: {{{}}}{} is not an element of {} {}",
                    key.0, key.1, self.register, self.version
                ));
                continue;
            };
            let parent = node.parent_element();
            let allowed = match parent {
                None => element.parents.is_empty(),
                Some(p) => element.parents.iter().any(|short| {
                    self.resolve(short).is_ok_and(|(ns, name)| {
                        p.tag_name().namespace() == Some(ns.as_str()) && p.tag_name().name() == name
                    })
                }),
            };
            if !allowed {
                problems.push(format!(
                    "{place}: {} may not stand in {}",
                    element.name,
                    parent.map(describe).unwrap_or_else(|| "the root".into())
                ));
            }
            for a in node.attributes() {
                if a.namespace().is_none() && !element.attributes.iter().any(|x| x == a.name()) {
                    problems.push(format!("{place}: unknown attribute {}", a.name()));
                }
            }
            let text: String = node
                .children()
                .filter(|c| c.is_text())
                .filter_map(|c| c.text())
                .collect();
            if let Err(p) = check_value(&element.kind, &text, node.has_children()) {
                problems.push(format!("{place}: {p}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Checks a JSON answer against the table's members.
    pub fn check_json(&self, value: &serde_json::Value) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        walk_json(self, "", value, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn walk_json(table: &Table, path: &str, value: &serde_json::Value, problems: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match table.members.iter().find(|m| m.path == child) {
                    None => problems.push(format!(
                        "{child} is not a member of {} {}",
                        table.register, table.version
                    )),
                    Some(m) => {
                        if let Err(p) = check_json_value(&m.kind, v) {
                            problems.push(format!("{child}: {p}"));
                        }
                        walk_json(table, &child, v, problems);
                    }
                }
            }
        }
        Value::Array(list) => {
            for v in list {
                walk_json(table, &format!("{path}[]"), v, problems);
            }
        }
        _ => {}
    }
}

fn check_json_value(kind: &str, v: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    match (kind, v) {
        ("object", Value::Object(_)) | ("array", Value::Array(_)) => Ok(()),
        ("bool", Value::Bool(_)) | ("int", Value::Number(_)) => Ok(()),
        (_, Value::String(s)) if kind != "object" && kind != "array" => check_value(kind, s, false),
        (_, other) => Err(format!("expected {kind}, found {other}")),
    }
}

fn describe(node: roxmltree::Node) -> String {
    let mut names: Vec<&str> = node
        .ancestors()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    names.reverse();
    names.join("/")
}

fn range(spec: &str) -> Option<(usize, usize)> {
    let (a, b) = spec.split_once("..")?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn is_date(t: &str) -> bool {
    let b = t.as_bytes();
    t.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && t.chars()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok()
}

/// Checks a text value against a table type (see the tables' headers).
pub fn check_value(kind: &str, text: &str, has_children: bool) -> Result<(), String> {
    let t = text.trim();
    let (name, arg) = kind.split_once(':').unwrap_or((kind, ""));
    let ok = match name {
        "complex" => {
            return if t.is_empty() || !has_children && t.is_empty() {
                Ok(())
            } else {
                Err(format!("holds elements only, found text {t:?}"))
            };
        }
        "text" => {
            let (min, max) = range(arg).unwrap_or((0, usize::MAX));
            (min..=max).contains(&t.chars().count())
        }
        "digits" => t.len() == arg.parse().unwrap_or(0) && t.chars().all(|c| c.is_ascii_digit()),
        "int" => match (t.parse::<i64>(), range(arg)) {
            (Ok(n), Some((min, max))) => n >= min as i64 && n <= max as i64,
            (Ok(_), None) => true,
            _ => false,
        },
        "enum" => arg.split('|').any(|v| v == t),
        "date" => is_date(t),
        // YYYYMMDD (VTJ PaivamaaraTyyppi), possibly empty where a product
        // sends the element without a value.
        // VTJ's own partial dates use 00 for an unknown month or day.
        "ymd" => {
            t.is_empty()
                || t.len() == 8
                    && t.chars().all(|c| c.is_ascii_digit())
                    && (chrono::NaiveDate::parse_from_str(t, "%Y%m%d").is_ok()
                        || (&t[6..] == "00" && &t[4..6] <= "12"))
        }
        "partial-date" => {
            let digits = t.chars().filter(|c| c.is_ascii_digit()).count();
            (t.len() == 10 && digits == 8 && &t[4..5] == "-" && &t[7..8] == "-")
                || (t.len() <= 7 && t.chars().all(|c| c.is_ascii_digit()))
        }
        // RFC 3339, a local time without offset (SPAR's Tidsstampel), or an
        // offset of hours only (`+02`, as KRR's documented examples write it).
        "datetime" => {
            chrono::DateTime::parse_from_rfc3339(t).is_ok()
                || chrono::DateTime::parse_from_rfc3339(&format!("{t}:00")).is_ok()
                || chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        }
        "pattern-id" => {
            t.len() == 12
                && t.starts_with(|c: char| ('1'..='9').contains(&c))
                && t.chars().all(|c| c.is_ascii_digit())
        }
        // Sokargument-1.2's name arguments: `\w+[\w\s*\-']*`, with lengths.
        "sokargument" => {
            let (min, max) = range(arg).unwrap_or((1, usize::MAX));
            (min..=max).contains(&t.chars().count())
                && t.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                && t.chars().all(|c| {
                    c.is_alphanumeric() || c == '_' || c.is_whitespace() || "*-'".contains(c)
                })
        }
        "pattern-postnr" => {
            t.len() == 5
                && t.starts_with(|c: char| ('1'..='9').contains(&c))
                && t.chars().all(|c| c.is_ascii_digit())
        }
        "pattern-district" => {
            t.len() == 6
                && t.starts_with(|c: char| ('1'..='9').contains(&c))
                && t.chars().all(|c| c.is_ascii_digit())
        }
        // FI henkilötunnus: DDMMYY, a century sign, NNN and a check character.
        "hetu" => folkhub_core::ids::parse_finnish(t).is_ok(),
        other => return Err(format!("the table names an unknown type {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{t:?} is not {kind}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_parses_and_resolves() {
        for (name, _) in TABLES {
            let t = table(name).unwrap_or_else(|e| panic!("{e}"));
            for e in &t.elements {
                t.resolve(&e.name).unwrap_or_else(|p| panic!("{name}: {p}"));
                for p in &e.parents {
                    t.resolve(p).unwrap_or_else(|p| panic!("{name}: {p}"));
                }
                check_value(&e.kind, "", false).err();
            }
        }
    }

    #[test]
    fn the_checker_finds_wrong_namespaces_parents_and_values() {
        let t = table("spar-2021.1").unwrap_or_else(|e| panic!("{e}"));
        let person = "http://statenspersonadressregister.se/schema/komponent/person/person-1.2";
        let svar =
            "http://statenspersonadressregister.se/schema/personsok/2021.1/personsokningsvar";
        let soap = "http://schemas.xmlsoap.org/soap/envelope/";
        // The names in person-1.2, as the first simulator and connector had them.
        let wrong = format!(
            "<s:Envelope xmlns:s=\"{soap}\"><s:Body><a:SPARPersonsokningSvar xmlns:a=\"{svar}\" xmlns:p=\"{person}\"><a:PersonsokningSvarspost><p:PersonId><p:IdNummer>197001011234</p:IdNummer><p:Typ>PERSONNUMMER</p:Typ></p:PersonId><p:Namn/></a:PersonsokningSvarspost></a:SPARPersonsokningSvar></s:Body></s:Envelope>"
        );
        let problems = t.check_xml(&wrong).expect_err("Namn is not in person-1.2");
        assert!(
            problems.iter().any(|p| p.contains("person-1.2}Namn")),
            "{problems:?}"
        );
        let bad_value = format!(
            "<s:Envelope xmlns:s=\"{soap}\"><s:Body><a:SPARPersonsokningSvar xmlns:a=\"{svar}\" xmlns:p=\"{person}\"><a:PersonsokningSvarspost><p:PersonId><p:IdNummer>0197001011</p:IdNummer></p:PersonId></a:PersonsokningSvarspost></a:SPARPersonsokningSvar></s:Body></s:Envelope>"
        );
        let problems = t.check_xml(&bad_value).expect_err("IdNummer pattern");
        assert!(
            problems.iter().any(|p| p.contains("pattern-id")),
            "{problems:?}"
        );
        let misplaced = format!(
            "<s:Envelope xmlns:s=\"{soap}\"><s:Body><a:SPARPersonsokningSvar xmlns:a=\"{svar}\" xmlns:p=\"{person}\"><p:PersonId><p:IdNummer>197001011234</p:IdNummer></p:PersonId></a:SPARPersonsokningSvar></s:Body></s:Envelope>"
        );
        let problems = t
            .check_xml(&misplaced)
            .expect_err("PersonId outside a post");
        assert!(
            problems.iter().any(|p| p.contains("may not stand in")),
            "{problems:?}"
        );
    }

    #[test]
    fn value_types() {
        assert!(check_value("date", "2024-03-01", false).is_ok());
        assert!(check_value("date", "2024-03-00", false).is_err());
        assert!(check_value("partial-date", "2024-03-00", false).is_ok());
        assert!(check_value("partial-date", "2024", false).is_ok());
        assert!(check_value("ymd", "20240301", false).is_ok());
        assert!(check_value("ymd", "2024-03-01", false).is_err());
        assert!(check_value("ymd", "20240300", false).is_ok());
        assert!(check_value("ymd", "20241301", false).is_err());
        assert!(check_value("ymd", "20240300", false).is_ok());
        assert!(check_value("ymd", "20241301", false).is_err());
        assert!(check_value("int:10..99", "12", false).is_ok());
        assert!(check_value("int:10..99", "9", false).is_err());
        assert!(check_value("enum:JA|NEJ", "ja", false).is_err());
        assert!(check_value("text:1..5", "abcdef", false).is_err());
    }
}
