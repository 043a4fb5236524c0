//! Kartverket's address API and SSB Klass → the coordinates and city
//! district of a Norwegian address.
//!
//! The connector looks the address up with `GET /sok` on its parts
//! (kommunenummer, adressenavn, nummer, bokstav; or gardsnummer and
//! bruksnummer), takes the exact hit's `representasjonspunkt`, and finds
//! the district of the address's grunnkrets in SSB's grunnkrets → bydel
//! correspondence (Klass `correspondsAt`), which it reads once per batch.
//! Only Oslo, Bergen, Trondheim and Stavanger have districts.

use std::collections::BTreeMap;

use folkhub_connector_sdk::MappedField;
use serde_json::{Value, json};

pub const UPSTREAM_VERSION: &str = "v1";
pub const MAX_BATCH: usize = 200;
/// Municipalities with city districts (SSB Klass 103).
pub const CITIES: &[&str] = &["0301", "4601", "5001", "1103"];

pub const FIELDS: &[&str] = &["address.coordinates", "address.district"];

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Numbers come as JSON numbers or strings.
fn number(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The `sok` query for an address, or `None` when Kartverket cannot know it
/// (not in Norway, no street or cadastral parts).
pub fn query(base: &str, address: &Value) -> Option<String> {
    if text(address, "country").is_some_and(|c| c != "NOR") {
        return None;
    }
    let municipality = text(address, "municipality")?;
    let mut q = format!(
        "{base}/sok?kommunenummer={}&treffPerSide=10&utkoordsys=4258",
        encode(municipality)
    );
    match text(address, "kind")? {
        "street" => {
            q.push_str(&format!(
                "&adressenavn={}&nummer={}",
                encode(text(address, "street")?),
                encode(text(address, "house_number")?)
            ));
            if let Some(letter) = text(address, "house_letter") {
                q.push_str(&format!("&bokstav={}", encode(letter)));
            }
        }
        "cadastral" => q.push_str(&format!(
            "&gardsnummer={}&bruksnummer={}",
            encode(text(address, "farm")?),
            encode(text(address, "holding")?)
        )),
        _ => return None,
    }
    Some(q)
}

/// The representation point of the hit that is exactly `address`.
pub fn pick(answer: &Value, address: &Value) -> Result<Option<Value>, String> {
    let hits = answer
        .get("adresser")
        .and_then(Value::as_array)
        .ok_or("the answer has no adresser list")?;
    let same = |a: Option<String>, b: Option<&str>| {
        a.unwrap_or_default().to_lowercase() == b.unwrap_or_default().to_lowercase()
    };
    let hit = hits.iter().find(|h| match text(address, "kind") {
        Some("street") => {
            same(
                text(h, "adressenavn").map(String::from),
                text(address, "street"),
            ) && same(number(h, "nummer"), text(address, "house_number"))
                && same(
                    text(h, "bokstav").map(String::from),
                    text(address, "house_letter"),
                )
        }
        Some("cadastral") => {
            same(number(h, "gardsnummer"), text(address, "farm"))
                && same(number(h, "bruksnummer"), text(address, "holding"))
        }
        _ => false,
    });
    let Some(hit) = hit else { return Ok(None) };
    let point = hit
        .get("representasjonspunkt")
        .ok_or("the hit has no representasjonspunkt")?;
    let (Some(lat), Some(lon)) = (
        point.get("lat").and_then(Value::as_f64),
        point.get("lon").and_then(Value::as_f64),
    ) else {
        return Err(format!("representasjonspunkt without lat/lon: {point}"));
    };
    let epsg = text(point, "epsg").unwrap_or("EPSG:4258");
    Ok(Some(json!({"lat": lat, "lon": lon, "epsg": epsg})))
}

/// SSB Klass `correspondsAt` → grunnkrets code → district code.
pub fn districts(answer: &Value) -> Result<BTreeMap<String, String>, String> {
    let items = answer
        .get("correspondenceItems")
        .and_then(Value::as_array)
        .ok_or("the Klass answer has no correspondenceItems")?;
    Ok(items
        .iter()
        .filter_map(|i| {
            Some((
                text(i, "sourceCode")?.to_string(),
                text(i, "targetCode")?.to_string(),
            ))
        })
        .collect())
}

/// The fields for one address: its point, and its district when the
/// grunnkrets lies in one.
pub fn fields(
    point: Value,
    basic_unit: Option<&str>,
    districts: &BTreeMap<String, String>,
) -> Vec<MappedField> {
    let mut out = vec![MappedField {
        path: "address.coordinates",
        value: point,
        labels: vec![],
        effective: None,
    }];
    if let Some(district) = basic_unit.and_then(|u| districts.get(u)) {
        out.push(MappedField {
            path: "address.district",
            value: json!(district),
            labels: vec![],
            effective: None,
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let text =
            std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn street_query_and_exact_pick() {
        let address = json!({"kind": "street", "street": "Storgata", "house_number": "12", "house_letter": "B", "municipality": "0301", "country": "NOR"});
        let q = query("https://ws.geonorge.no/adresser/v1", &address).unwrap();
        assert_eq!(
            q,
            "https://ws.geonorge.no/adresser/v1/sok?kommunenummer=0301&treffPerSide=10&utkoordsys=4258&adressenavn=Storgata&nummer=12&bokstav=B"
        );
        let point = pick(&fixture("sok.json"), &address).unwrap().unwrap();
        assert_eq!(
            point,
            json!({"lat": 59.91501, "lon": 10.75342, "epsg": "EPSG:4258"})
        );
        // 12 without a letter is another address.
        let plain = json!({"kind": "street", "street": "Storgata", "house_number": "12", "municipality": "0301", "country": "NOR"});
        assert_eq!(
            pick(&fixture("sok.json"), &plain).unwrap().unwrap()["lat"],
            json!(59.915)
        );
        let missing = json!({"kind": "street", "street": "Storgata", "house_number": "99", "municipality": "0301"});
        assert_eq!(pick(&fixture("sok.json"), &missing).unwrap(), None);
    }

    #[test]
    fn odd_addresses() {
        assert_eq!(
            query(
                "b",
                &json!({"kind": "postal", "lines": ["x"], "country": "SWE"})
            ),
            None
        );
        assert_eq!(
            query(
                "b",
                &json!({"kind": "unknown", "municipality": "0301", "country": "NOR"})
            ),
            None
        );
        let q = query(
            "b",
            &json!({"kind": "cadastral", "farm": "12", "holding": "3", "municipality": "3403"}),
        )
        .unwrap();
        assert!(q.ends_with("&gardsnummer=12&bruksnummer=3"), "{q}");
        assert_eq!(encode("Øvre Slottsgate"), "%C3%98vre%20Slottsgate");
        assert!(
            pick(&json!({"metadata": {}}), &json!({"kind": "street"}))
                .unwrap_err()
                .contains("adresser")
        );
    }

    #[test]
    fn districts_from_klass() {
        let map = districts(&fixture("klass.json")).unwrap();
        let f = fields(
            json!({"lat": 1.0, "lon": 2.0, "epsg": "EPSG:4258"}),
            Some("03010101"),
            &map,
        );
        assert_eq!(f[1].value, json!("030101"));
        let f = fields(
            json!({"lat": 1.0, "lon": 2.0, "epsg": "EPSG:4258"}),
            Some("34030101"),
            &map,
        );
        assert_eq!(f.len(), 1, "no district outside the four cities");
        assert!(
            districts(&json!({}))
                .unwrap_err()
                .contains("correspondenceItems")
        );
    }
}
