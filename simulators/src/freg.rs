//! Folkeregisteret "offentlig med hjemmel" v1, as documented by Skatteetaten
//! and the OpenAPI copy in shared/specs: person documents whose properties
//! are arrays of dated versions, bulk lookup, and the `hendelser` feed.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::population::{AddressKind, Civil, Gender, Grading, Person, Population, Status, Version};
use crate::{Shared, fault_response};

/// Base path of the package every route below hangs from.
pub const BASE: &str = "/folkeregisteret/offentlig-med-hjemmel/api/v1";
/// The scope (rettighetspakke) a token must carry.
pub const SCOPE: &str = "folkeregister:deling/offentligmedhjemmel";
/// Events per feed page, fixed by the register.
pub const FEED_PAGE: usize = 1000;
/// Largest bulk lookup the simulator accepts (the real limit is not published).
pub const MAX_BULK: usize = 1000;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A FREG error body (`FolkeregisterFeilmelding`).
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({
            "feilkode": code,
            "feilmelding": message,
            "httpStatus": status.as_u16(),
            "alvorlighetsgrad": "ERROR",
        })),
    )
        .into_response()
}

fn meta<T>(
    v: &Version<T>,
    current: bool,
    next: Option<DateTime<Utc>>,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("erGjeldende".into(), json!(current));
    m.insert("ajourholdstidspunkt".into(), json!(ts(v.valid_from)));
    m.insert("gyldighetstidspunkt".into(), json!(ts(v.valid_from)));
    if let Some(end) = next {
        m.insert("opphoerstidspunkt".into(), json!(ts(end)));
    }
    m.insert("kilde".into(), json!("synt"));
    m
}

/// Renders a versioned property: every version, the last one current.
fn versions<T>(
    list: &[Version<T>],
    render: impl Fn(&T) -> Option<serde_json::Map<String, Value>>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let current = i + 1 == list.len();
        let next = list.get(i + 1).map(|n| n.valid_from);
        if let Some(mut body) = render(&v.value) {
            body.extend(meta(v, current, next));
            out.push(Value::Object(body));
        }
    }
    out
}

fn obj(v: Value) -> Option<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn grading_code(g: Grading) -> &'static str {
    match g {
        Grading::Ugradert => "ugradert",
        Grading::Klientadresse => "klientadresse",
        Grading::Fortrolig => "fortrolig",
        Grading::StrengtFortrolig => "strengtFortrolig",
    }
}

/// Which parts the caller asked for (`part=`); FREG's default is person-basis.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub relations: bool,
}

impl Parts {
    pub fn from_query(parts: &[String]) -> Parts {
        let relations = parts.iter().any(|p| {
            p.split(',').any(|p| {
                matches!(
                    p.trim(),
                    "relasjon-utvidet" | "familierelasjon" | "foreldreansvar" | "historikk"
                )
            })
        });
        Parts { relations }
    }
}

/// An address as the register writes it: `vegadresse`, `matrikkeladresse`
/// or `ukjentBosted`, with the grunnkrets.
fn address_json(a: &crate::population::Address) -> Value {
    let poststed = json!({"postnummer": a.postal_code, "poststedsnavn": a.city});
    let mut m = match &a.kind {
        AddressKind::Street {
            street,
            number,
            letter,
            street_code,
        } => {
            let mut nummer = json!({"husnummer": number.to_string()});
            if let Some(l) = letter {
                nummer["husbokstav"] = json!(l.to_string());
            }
            let mut v = json!({"adressenavn": street, "adressenummer": nummer, "adressekode": street_code.to_string(), "kommunenummer": a.municipality, "poststed": poststed});
            if let Some(u) = &a.unit {
                v["bruksenhetsnummer"] = json!(u);
            }
            json!({"vegadresse": v})
        }
        AddressKind::Cadastral { farm, holding } => {
            let mut v = json!({"matrikkelnummer": {"kommunenummer": a.municipality, "gaardsnummer": farm, "bruksnummer": holding}, "poststed": poststed});
            if let Some(u) = &a.unit {
                v["bruksenhetsnummer"] = json!(u);
            }
            json!({"matrikkeladresse": v})
        }
        AddressKind::Unknown => json!({"ukjentBosted": {"bostedskommune": a.municipality}}),
    };
    if !matches!(a.kind, AddressKind::Unknown) {
        m["grunnkrets"] = json!(a.statistical_unit);
    }
    m
}

/// A child's second home under an agreement on shared residence (FREG
/// `deltBosted`): synthetic, every fifth minor whose father first lived at
/// another address than the child; from the child's first moving-in date.
pub fn shared_residence<'a>(
    population: &'a Population,
    p: &Person,
) -> Option<(&'a crate::population::Address, chrono::NaiveDate)> {
    if !p.is_minor() || !p.key.is_multiple_of(5) || p.death.is_some() {
        return None;
    }
    // The father's first registered address: data of the child's own
    // document, which does not change when the father later moves (the
    // register changes it with an event about the child).
    let own = p.addresses.first().and_then(|v| v.value.as_ref())?;
    let father = population.persons.get(p.father?)?;
    let home = father.addresses.first().and_then(|v| v.value.as_ref())?;
    if matches!(home.kind, AddressKind::Unknown)
        || home.municipality == own.municipality && home.postal_code == own.postal_code
    {
        return None;
    }
    Some((home, own.moved_in))
}

/// A post box (FREG `postadresse` with `postboksadresse`) for every ninth
/// adult with an address: synthetic, at the home's post office.
pub fn postal_box(p: &Person) -> Option<(String, &crate::population::Address)> {
    let a = p.address()?;
    (p.key.is_multiple_of(9)
        && !p.is_minor()
        && p.death.is_none()
        && !matches!(a.kind, AddressKind::Unknown))
    .then(|| (format!("Postboks {}", 1000 + p.key), a))
}

/// The person document as the register sends it.
pub fn document(population: &Population, p: &Person, parts: Parts) -> Value {
    let mut doc = serde_json::Map::new();
    let id_count = p.ids.len();
    let ids: Vec<Value> = p
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let current = i + 1 == id_count;
            let kind = if id.starts_with(|c: char| c >= '4') {
                "dNummer"
            } else {
                "foedselsnummer"
            };
            json!({
                "foedselsEllerDNummer": id,
                "identifikatortype": kind,
                "status": if current { "iBruk" } else { "opphoert" },
                "erGjeldende": current,
                "kilde": "synt",
            })
        })
        .collect();
    doc.insert("identifikasjonsnummer".into(), Value::Array(ids));
    if let Some(foreign) = population.foreign_ids.get(&p.key) {
        // Folkeregisteret keeps a foreign ID as the issuing country wrote it
        // (a Swedish personnummer in its 10-digit display form).
        let list: Vec<Value> = foreign
            .iter()
            .map(|(country, id)| {
                let shown = if *country == "SWE" {
                    folkhub_core::ids::swedish_display(id, crate::population::today())
                } else {
                    id.clone()
                };
                json!({
                    "identifikasjonsnummer": shown,
                    "identifikasjonsnummertype": "personidentifikasjonsnummer",
                    "utstederland": country,
                    "erGjeldende": true,
                    "kilde": "synt",
                })
            })
            .collect();
        doc.insert("utenlandskPersonidentifikasjon".into(), Value::Array(list));
    }
    doc.insert(
        "navn".into(),
        Value::Array(versions(&p.names, |n| {
            let mut m = json!({"fornavn": n.given, "etternavn": n.family});
            if let Some(middle) = &n.middle {
                m["mellomnavn"] = json!(middle);
            }
            obj(m)
        })),
    );
    let foedeland = p.citizenship[0];
    doc.insert(
        "foedsel".into(),
        json!([{"foedselsdato": p.birth.to_string(), "foedselsaar": p.birth.format("%Y").to_string(), "foedeland": foedeland, "erGjeldende": true, "kilde": "synt"}]),
    );
    doc.insert(
        "kjoenn".into(),
        json!([{"kjoenn": match p.gender { Gender::Female => "kvinne", Gender::Male => "mann" }, "erGjeldende": true}]),
    );
    doc.insert(
        "status".into(),
        Value::Array(versions(&p.status, |s| {
            obj(json!({"status": match s { Status::Resident => "bosatt", Status::Emigrated => "utflyttet", Status::Deceased => "doed" }}))
        })),
    );
    if let Some(d) = p.death {
        doc.insert(
            "doedsfall".into(),
            json!({"doedsdato": d.to_string(), "erGjeldende": true, "kilde": "synt"}),
        );
    }
    doc.insert(
        "sivilstand".into(),
        Value::Array(versions(&p.civil, |c| {
            let code = match c {
                Civil::Unmarried => "ugift",
                Civil::Married => "gift",
                Civil::Widowed => "enkeEllerEnkemann",
                Civil::Divorced => "skilt",
            };
            let mut m = json!({"sivilstand": code});
            if *c == Civil::Married
                && let Some(s) = p.spouse
            {
                m["relatertVedSivilstand"] = json!(population.persons[s].id());
            }
            obj(m)
        })),
    );
    doc.insert(
        "statsborgerskap".into(),
        Value::Array(
            p.citizenship
                .iter()
                .map(|c| json!({"statsborgerskap": c, "erGjeldende": true}))
                .collect(),
        ),
    );
    let grading = p.current_grading();
    if !p.grading.is_empty() {
        doc.insert(
            "adressebeskyttelse".into(),
            Value::Array(versions(&p.grading, |g| {
                obj(json!({"graderingsnivaa": grading_code(*g)}))
            })),
        );
    }
    // Strengt fortrolig: the register sends no address data at all.
    if grading != Grading::StrengtFortrolig {
        let addresses = versions(&p.addresses, |a| {
            let mut m = address_json(a.as_ref()?);
            m["flyttedato"] = json!(a.as_ref()?.moved_in.to_string());
            m["adressegradering"] = json!(grading_code(grading));
            obj(m)
        });
        if !addresses.is_empty() {
            doc.insert("bostedsadresse".into(), Value::Array(addresses));
        }
        if let Some((home, since)) = shared_residence(population, p) {
            let mut m = address_json(home);
            m["startdatoForKontrakt"] = json!(since.to_string());
            m["adressegradering"] = json!(grading_code(grading));
            m["erGjeldende"] = json!(true);
            m["kilde"] = json!("synt");
            doc.insert("deltBosted".into(), json!([m]));
        }
        if let Some((box_number, a)) = postal_box(p) {
            doc.insert(
                "postadresse".into(),
                json!([{"postboksadresse": {"postboks": box_number, "poststed": {"postnummer": a.postal_code, "poststedsnavn": a.city}},
                        "adressegradering": grading_code(grading), "erGjeldende": true, "kilde": "synt"}]),
            );
        }
    }
    if parts.relations {
        let mut relations = Vec::new();
        let role_of = |k: usize| match population.persons[k].gender {
            Gender::Female => "mor",
            Gender::Male => "far",
        };
        for parent in p.mother.into_iter().chain(p.father) {
            relations.push(json!({"relatertPerson": population.persons[parent].id(), "relatertPersonsRolle": role_of(parent), "minRolleForPerson": "barn", "erGjeldende": true}));
        }
        for &child in &p.children {
            relations.push(json!({"relatertPerson": population.persons[child].id(), "relatertPersonsRolle": "barn", "minRolleForPerson": role_of(p.key), "erGjeldende": true}));
        }
        if let Some(s) = p.spouse.filter(|_| p.current_civil() == Civil::Married) {
            relations.push(json!({"relatertPerson": population.persons[s].id(), "relatertPersonsRolle": "ektefelleEllerPartner", "minRolleForPerson": "ektefelleEllerPartner", "erGjeldende": true}));
        }
        if !relations.is_empty() {
            doc.insert("familierelasjon".into(), Value::Array(relations));
        }
        let custody: Vec<Value> = population
            .parental_responsibility(p)
            .into_iter()
            .map(|r| {
                let ansvar = match r["role"].as_str() {
                    Some("joint") => "felles",
                    Some("mother") => "mor",
                    Some("father") => "far",
                    _ => "ukjent",
                };
                json!({"ansvar": ansvar, "ansvarlig": r["id"], "ansvarssubjekt": p.id(), "erGjeldende": true})
            })
            .collect();
        if !custody.is_empty() {
            doc.insert("foreldreansvar".into(), Value::Array(custody));
        }
    }
    Value::Object(doc)
}

fn parts_from(raw: Option<&str>) -> Parts {
    let parts: Vec<String> = raw
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("part="))
        .map(|v| v.replace("%2C", ","))
        .collect();
    Parts::from_query(&parts)
}

/// Checks the bearer token; `Err` is the register's 401/403 answer.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "FREG-001",
            "Mangler gyldig token (Authorization: Bearer)",
        )));
    };
    match shared.tokens.check(token) {
        None => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "FREG-001",
            "Ugyldig eller utløpt token",
        ))),
        Some(scopes) if !scopes.iter().any(|s| s == SCOPE) => Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "FREG-003",
            "Tokenet gir ikke tilgang til rettighetspakken offentligmedhjemmel",
        ))),
        Some(_) => Ok(()),
    }
}

async fn guard(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    shared.count_request();
    if let Some(r) = fault_response(shared).await {
        return Err(Box::new(r));
    }
    authorize(shared, headers)
}

pub async fn person(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    shared.note_asked([&id]);
    if folkhub_core::ids::parse_norwegian(&id).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "FREG-002",
            "Ugyldig fødsels- eller d-nummer",
        );
    }
    let population = shared.population.read().await;
    match population.find(&id) {
        Some(p) => Json(document(&population, p, parts_from(uri.query()))).into_response(),
        None => error(StatusCode::NOT_FOUND, "FREG-004", "Fant ikke person"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRequest {
    foedsels_eller_d_nummer: Vec<String>,
}

pub async fn bulk(
    State(shared): State<Shared>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let request: BulkRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "FREG-002",
                &format!("Ugyldig forespørsel: {e}"),
            );
        }
    };
    shared.note_asked(&request.foedsels_eller_d_nummer);
    if request.foedsels_eller_d_nummer.len() > MAX_BULK {
        return error(
            StatusCode::BAD_REQUEST,
            "FREG-002",
            &format!("For mange identifikatorer, maks {MAX_BULK}"),
        );
    }
    let parts = parts_from(uri.query());
    let population = shared.population.read().await;
    let index = population.index();
    let oppslag: Vec<Value> = request
        .foedsels_eller_d_nummer
        .iter()
        .map(|id| match index.get(id) {
            Some(&key) => json!({"foedselsEllerDNummer": id, "folkeregisterperson": document(&population, &population.persons[key], parts)}),
            None if folkhub_core::ids::parse_norwegian(id).is_err() => {
                json!({"foedselsEllerDNummer": id, "feilmelding": {"feilmelding": "Ugyldig fødsels- eller d-nummer"}})
            }
            None => json!({"foedselsEllerDNummer": id, "feilmelding": {"feilmelding": "Fant ikke person"}}),
        })
        .collect();
    Json(json!({"oppslag": oppslag})).into_response()
}

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    seq: Option<String>,
}

pub async fn feed(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let Some(seq) = q.seq.as_deref().and_then(|s| s.parse::<u64>().ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "FREG-002",
            "Parameteren seq mangler eller er ugyldig",
        );
    };
    let population = shared.population.read().await;
    let start = seq.max(1) as usize - 1;
    let page: Vec<Value> = population
        .events
        .iter()
        .skip(start)
        .take(FEED_PAGE)
        .map(|e| {
            json!({
                "sekvensnummer": e.sequence,
                "hendelse": {
                    "folkeregisteridentifikator": e.id,
                    "hendelsetype": e.kind,
                    "hendelsesdokument": format!("h{:010}", e.sequence),
                    "persondokument": format!("p{:06}-{}", e.person, e.sequence),
                    "ajourholdstidspunkt": ts(e.recorded),
                }
            })
        })
        .collect();
    let etag = format!(
        "\"{}-{}\"",
        seq,
        population.events.len().min(start + FEED_PAGE)
    );
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    ([("etag", etag)], Json(Value::Array(page))).into_response()
}

pub async fn latest_sequence(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let population = shared.population.read().await;
    Json(json!(population.events.len())).into_response()
}

pub fn router() -> axum::Router<Shared> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(&format!("{BASE}/personer/bulkoppslag"), post(bulk))
        .route(&format!("{BASE}/personer/{{id}}"), get(person))
        .route(&format!("{BASE}/hendelser/feed"), get(feed))
        .route(
            &format!("{BASE}/hendelser/siste/sekvensnummer"),
            get(latest_sequence),
        )
}
