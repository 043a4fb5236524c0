//! Kartverket's open address API (`/adresser/v1/sok`, `/adresser/v1/punktsok`)
//! and the SSB Klass correspondence that maps grunnkretser to city
//! districts (`/klass/v1/classifications/{id}/correspondsAt`), over the
//! addresses of the synthetic population.
//!
//! Neither Kartverket nor Folkeregisteret gives the city district (bydel);
//! SSB publishes which grunnkrets lies in which district. The simulator's
//! synthetic geography: a grunnkrets `KKKKGGNN` of Oslo, Bergen, Trondheim
//! or Stavanger lies in district number `(GG - 1) mod n + 1` of that city,
//! where `n` is the city's number of districts (Oslo 15, Bergen 8,
//! Trondheim 4, Stavanger 7); the district code is `KKKK` + that number in
//! two digits (SSB Klass 103: `030101` Gamle Oslo ... `030115` Søndre
//! Nordstrand). Names are the cities' real districts; the grunnkrets
//! assignment is synthetic. Coordinates are synthetic points near each
//! municipality's centre (EPSG:4258), derived from the street name and
//! number.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::population::{Address, AddressKind, Population};
use crate::{Shared, fault_response};

/// SSB Klass classification ids (grunnkretser, and bydeler = 103).
pub const KLASS_BASIC_UNITS: &str = "1";
pub const KLASS_DISTRICTS: &str = "103";
pub const MAX_PAGE: usize = 1000;

/// The districts of the four cities, in SSB number order.
pub const DISTRICTS: &[(&str, &[&str])] = &[
    (
        "0301",
        &[
            "Gamle Oslo",
            "Grünerløkka",
            "Sagene",
            "St. Hanshaugen",
            "Frogner",
            "Ullern",
            "Vestre Aker",
            "Nordre Aker",
            "Bjerke",
            "Grorud",
            "Stovner",
            "Alna",
            "Østensjø",
            "Nordstrand",
            "Søndre Nordstrand",
        ],
    ),
    (
        "4601",
        &[
            "Arna",
            "Bergenhus",
            "Fana",
            "Fyllingsdalen",
            "Laksevåg",
            "Ytrebygda",
            "Årstad",
            "Åsane",
        ],
    ),
    ("5001", &["Midtbyen", "Østbyen", "Lerkendal", "Heimdal"]),
    (
        "1103",
        &[
            "Hundvåg",
            "Tasta",
            "Eiganes og Våland",
            "Madla",
            "Storhaug",
            "Hillevåg",
            "Hinna",
        ],
    ),
];

/// The district (code, name) a grunnkrets lies in, for the four cities.
pub fn district(municipality: &str, statistical_unit: u32) -> Option<(String, &'static str)> {
    let (_, names) = DISTRICTS.iter().find(|(m, _)| *m == municipality)?;
    let group = statistical_unit / 100;
    let number = (group.max(1) as usize - 1) % names.len() + 1;
    Some((format!("{municipality}{number:02}"), names[number - 1]))
}

const CENTRES: &[(&str, f64, f64)] = &[
    ("0301", 59.9133, 10.7389),
    ("4601", 60.3913, 5.3221),
    ("5001", 63.4305, 10.3951),
    ("1103", 58.9700, 5.7331),
    ("5501", 69.6492, 18.9553),
    ("3403", 60.7945, 11.0680),
];

/// The representation point of an address (synthetic, stable).
pub fn point(a: &Address) -> Option<(f64, f64)> {
    let (_, lat, lon) = CENTRES.iter().find(|(m, _, _)| *m == a.municipality)?;
    let (code, number) = match &a.kind {
        // One street name is one street within a municipality.
        AddressKind::Street { street, number, .. } => (
            street
                .bytes()
                .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                % 8633,
            *number,
        ),
        AddressKind::Cadastral { farm, holding } => (farm * 31 + 7, *holding),
        AddressKind::Unknown => return None,
    };
    let round = |x: f64| (x * 1e6).round() / 1e6;
    let dlat = f64::from(code % 97) - 48.0;
    let dlon = f64::from((code / 97) % 89) - 44.0;
    Some((
        round(lat + dlat * 0.0009 + f64::from(number) * 0.00002),
        round(lon + dlon * 0.0015 + f64::from(number) * 0.00003),
    ))
}

/// One address the register holds.
#[derive(Debug, Clone)]
pub struct Entry {
    pub address: Address,
    pub lat: f64,
    pub lon: f64,
}

fn key(a: &Address) -> Option<String> {
    Some(match &a.kind {
        AddressKind::Street {
            street,
            number,
            letter,
            ..
        } => format!(
            "{}:{street}:{number}:{}",
            a.municipality,
            letter.map(String::from).unwrap_or_default()
        ),
        AddressKind::Cadastral { farm, holding } => {
            format!("{}:m:{farm}:{holding}", a.municipality)
        }
        AddressKind::Unknown => return None,
    })
}

/// Every address any person has lived at, deduplicated.
pub fn index(population: &Population) -> Vec<Entry> {
    let mut map: BTreeMap<String, Entry> = BTreeMap::new();
    for p in &population.persons {
        for v in &p.addresses {
            let Some(a) = &v.value else { continue };
            let (Some(k), Some((lat, lon))) = (key(a), point(a)) else {
                continue;
            };
            map.entry(k).or_insert_with(|| Entry {
                address: Address {
                    unit: None,
                    ..a.clone()
                },
                lat,
                lon,
            });
        }
    }
    map.into_values().collect()
}

async fn cached_index(shared: &Shared) -> Arc<Vec<Entry>> {
    let population = shared.population.read().await;
    let version = population.changes_applied;
    if let Ok(cache) = shared.kartverket.lock()
        && let Some((v, entries)) = cache.as_ref()
        && *v == version
    {
        return entries.clone();
    }
    let entries = Arc::new(index(&population));
    if let Ok(mut cache) = shared.kartverket.lock() {
        *cache = Some((version, entries.clone()));
    }
    entries
}

fn municipality_name(number: &str) -> &'static str {
    match number {
        "0301" => "OSLO",
        "4601" => "BERGEN",
        "5001" => "TRONDHEIM",
        "1103" => "STAVANGER",
        "5501" => "TROMSØ",
        "3403" => "HAMAR",
        _ => "",
    }
}

/// One `adresser[]` item as the API returns it.
pub fn document(e: &Entry, distance: Option<f64>) -> Value {
    let a = &e.address;
    let mut d = json!({
        "kommunenummer": a.municipality,
        "kommunenavn": municipality_name(a.municipality),
        "postnummer": a.postal_code,
        "poststed": a.city,
        "bruksenhetsnummer": [],
        "stedfestingverifisert": true,
        "representasjonspunkt": {"epsg": "EPSG:4258", "lat": e.lat, "lon": e.lon},
        "oppdateringsdato": "2025-12-01T10:00:00",
    });
    match &a.kind {
        AddressKind::Street {
            street,
            number,
            letter,
            street_code,
        } => {
            let letter = letter.map(String::from).unwrap_or_default();
            d["objtype"] = json!("Vegadresse");
            d["adressenavn"] = json!(street);
            d["adressekode"] = json!(street_code);
            d["nummer"] = json!(number);
            d["bokstav"] = json!(letter);
            d["adressetekst"] = json!(format!("{street} {number}{letter}"));
            d["adressetilleggsnavn"] = Value::Null;
            d["gardsnummer"] = json!((street_code % 300) + 1);
            d["bruksnummer"] = json!(number % 50 + 1);
            d["festenummer"] = json!(0);
            d["undernummer"] = Value::Null;
        }
        AddressKind::Cadastral { farm, holding } => {
            d["objtype"] = json!("Matrikkeladresse");
            d["adressenavn"] = Value::Null;
            d["adressekode"] = json!(0);
            d["nummer"] = Value::Null;
            d["bokstav"] = json!("");
            d["adressetekst"] = json!(format!("{farm}/{holding}"));
            d["gardsnummer"] = json!(farm);
            d["bruksnummer"] = json!(holding);
            d["festenummer"] = json!(0);
            d["undernummer"] = Value::Null;
        }
        AddressKind::Unknown => {}
    }
    if let Some(m) = distance {
        d["meterDistanseTilPunkt"] = json!((m * 10.0).round() / 10.0);
    }
    d
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

fn page_params(q: &BTreeMap<String, String>) -> Result<(usize, usize), Box<Response>> {
    let per_page = match q.get("treffPerSide") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    &format!("treffPerSide must be 1–{MAX_PAGE}"),
                )));
            }
        },
    };
    let page = match q.get("side") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "side must be a number from 0",
            ))
        })?,
    };
    if let Some(system) = q.get("utkoordsys")
        && system != "4258"
    {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "the simulator serves utkoordsys 4258 only",
        )));
    }
    Ok((per_page, page))
}

fn paged(hits: Vec<Value>, per_page: usize, page: usize, query: &str) -> Response {
    let total = hits.len();
    let start = (page * per_page).min(total);
    let end = (start + per_page).min(total);
    let slice: Vec<Value> = hits[start..end].to_vec();
    Json(json!({
        "metadata": {
            "treffPerSide": per_page,
            "side": page,
            "totaltAntallTreff": total,
            "viserFra": start,
            "viserTil": end,
            "sokeStreng": query,
        },
        "adresser": slice,
    }))
    .into_response()
}

async fn sok(State(shared): State<Shared>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    shared.count_request();
    if let Some(r) = fault_response(&shared).await {
        return r;
    }
    let (per_page, page) = match page_params(&q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let filters = [
        "sok",
        "adressenavn",
        "nummer",
        "bokstav",
        "kommunenummer",
        "postnummer",
        "gardsnummer",
        "bruksnummer",
        "adressekode",
    ];
    if !filters.iter().any(|f| q.contains_key(*f)) {
        return error(
            StatusCode::BAD_REQUEST,
            "give sok or at least one of adressenavn, nummer, kommunenummer, postnummer, gardsnummer, bruksnummer",
        );
    }
    let entries = cached_index(&shared).await;
    let hits: Vec<Value> = entries
        .iter()
        .map(|e| document(e, None))
        .filter(|d| {
            let text = |k: &str| match &d[k] {
                Value::String(s) => s.to_lowercase(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            let exact = |param: &str, field: &str| {
                q.get(param)
                    .is_none_or(|want| text(field) == want.trim().to_lowercase())
            };
            let free = q.get("sok").is_none_or(|s| {
                let hay = format!(
                    "{} {} {} {}",
                    text("adressetekst"),
                    text("postnummer"),
                    text("poststed"),
                    text("kommunenavn")
                );
                s.split_whitespace()
                    .all(|t| hay.contains(&t.to_lowercase().trim_end_matches('*').to_string()))
            });
            free && exact("adressenavn", "adressenavn")
                && exact("nummer", "nummer")
                && exact("bokstav", "bokstav")
                && exact("kommunenummer", "kommunenummer")
                && exact("postnummer", "postnummer")
                && exact("gardsnummer", "gardsnummer")
                && exact("bruksnummer", "bruksnummer")
                && exact("adressekode", "adressekode")
        })
        .collect();
    let query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    paged(hits, per_page, page, &query)
}

async fn punktsok(
    State(shared): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    shared.count_request();
    if let Some(r) = fault_response(&shared).await {
        return r;
    }
    let (per_page, page) = match page_params(&q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let number = |k: &str| q.get(k).and_then(|v| v.parse::<f64>().ok());
    let (Some(lat), Some(lon), Some(radius)) = (number("lat"), number("lon"), number("radius"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "lat, lon and radius (metres) are required",
        );
    };
    if !(1.0..=5000.0).contains(&radius) {
        return error(StatusCode::BAD_REQUEST, "radius must be 1–5000 metres");
    }
    let entries = cached_index(&shared).await;
    let mut hits: Vec<(f64, &Entry)> = entries
        .iter()
        .map(|e| (metres(lat, lon, e.lat, e.lon), e))
        .filter(|(d, _)| *d <= radius)
        .collect();
    hits.sort_by(|a, b| a.0.total_cmp(&b.0));
    let docs = hits.iter().map(|(d, e)| document(e, Some(*d))).collect();
    paged(
        docs,
        per_page,
        page,
        &format!("lat={lat}&lon={lon}&radius={radius}"),
    )
}

/// Great-circle distance in metres.
fn metres(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let r = 6_371_000.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * r * a.sqrt().asin()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CorrespondsQuery {
    target_classification_id: Option<String>,
    date: Option<String>,
}

async fn corresponds_at(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<CorrespondsQuery>,
) -> Response {
    shared.count_request();
    if let Some(r) = fault_response(&shared).await {
        return r;
    }
    if q.date.is_none() {
        return error(StatusCode::BAD_REQUEST, "date (yyyy-MM-dd) is required");
    }
    if id != KLASS_BASIC_UNITS || q.target_classification_id.as_deref() != Some(KLASS_DISTRICTS) {
        return error(
            StatusCode::NOT_FOUND,
            "the simulator has the grunnkrets (1) → bydel (103) correspondence only",
        );
    }
    Json(correspondence()).into_response()
}

/// The grunnkrets → district correspondence, as Klass answers it.
pub fn correspondence() -> Value {
    let mut items = Vec::new();
    for (municipality, _) in DISTRICTS {
        for group in 1..20u32 {
            for unit in 1..40u32 {
                let basic = group * 100 + unit;
                if let Some((code, name)) = district(municipality, basic) {
                    items.push(json!({
                        "sourceCode": format!("{municipality}{basic:04}"),
                        "sourceName": format!("Grunnkrets {basic:04}"),
                        "targetCode": code,
                        "targetName": name,
                    }));
                }
            }
        }
    }
    json!({"correspondenceItems": items})
}

pub fn router() -> axum::Router<Shared> {
    use axum::routing::get;
    axum::Router::new()
        .route("/adresser/v1/sok", get(sok))
        .route("/adresser/v1/punktsok", get(punktsok))
        .route(
            "/klass/v1/classifications/{id}/correspondsAt",
            get(corresponds_at),
        )
}
