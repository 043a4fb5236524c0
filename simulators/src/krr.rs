//! KRR, the Norwegian contact and reservation register (Digdir), REST/JSON:
//! `POST /rest/v1/personer` and `/rest/v2/personer` with 1 to 1,000 IDs, the
//! fields a token's scopes allow, and a change log read by change number.
//! The change-log path and shape are inferred (Digdir documents them only
//! through its service desk): `GET /rest/v{1,2}/endringer?fraEndringsNummer=N`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::population::{Contact, KrrStatus, Population};
use crate::{Shared, fault_response};

pub const SCOPE_CONTACT: &str = "krr:global/kontaktinformasjon.read";
pub const SCOPE_MAILBOX: &str = "krr:global/digitalpost.read";
pub const MAX_IDS: usize = 1000;
pub const PAGE: usize = 1000;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"status": status.as_u16(), "error": status.canonical_reason().unwrap_or(""), "message": message}))).into_response()
}

/// Checks the token; returns (contact scope, mailbox scope).
async fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    version: &str,
) -> Result<(bool, bool), Box<Response>> {
    shared.count_request();
    if let Some(r) = fault_response(shared).await {
        return Err(Box::new(r));
    }
    if version != "v1" && version != "v2" {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "no such API version",
        )));
    }
    if let Some(date) = shared.retired(&format!("krr-{version}")) {
        return Err(Box::new(error(
            StatusCode::GONE,
            &format!("/rest/{version} was retired on {date}; use a newer version of the API"),
        )));
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        )));
    };
    let Some(scopes) = shared.tokens.check(token) else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid or expired token",
        )));
    };
    let contact = scopes.iter().any(|s| s == SCOPE_CONTACT);
    let mailbox = scopes.iter().any(|s| s == SCOPE_MAILBOX);
    if !contact && !mailbox {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "the token has no krr:global scope",
        )));
    }
    Ok((contact, mailbox))
}

/// One `personer[]` entry.
pub fn person(id: &str, contact: Option<&Contact>, scopes: (bool, bool)) -> Value {
    let Some(c) = contact else {
        return json!({"personidentifikator": id, "status": "IKKE_REGISTRERT"});
    };
    match c.status {
        KrrStatus::NotRegistered => {
            return json!({"personidentifikator": id, "status": "IKKE_REGISTRERT"});
        }
        KrrStatus::Deleted => {
            let mut out =
                json!({"personidentifikator": id, "status": "SLETTET", "reservasjon": "NEI"});
            if scopes.0 {
                out["varslingsstatus"] = json!("KAN_IKKE_VARSLES");
            }
            return out;
        }
        KrrStatus::Active => {}
    }
    // The reservation always comes; the notification status, e-mail,
    // mobile and language only under krr:global/kontaktinformasjon.read,
    // the mailbox only under krr:global/digitalpost.read (Digdir's REST
    // documentation; simulators/wire/krr-v2.toml).
    let mut out = json!({
        "personidentifikator": id,
        "reservasjon": if c.reserved { "JA" } else { "NEI" },
        "status": "AKTIV",
    });
    if c.reserved {
        out["reservasjonstidspunkt"] = json!(ts(c.updated));
    }
    let (contact_scope, mailbox_scope) = scopes;
    if contact_scope {
        out["varslingsstatus"] = json!(if c.can_notify() {
            "KAN_VARSLES"
        } else {
            "KAN_IKKE_VARSLES"
        });
        let mut info = serde_json::Map::new();
        if let Some(e) = &c.email {
            info.insert("epostadresse".into(), json!(e));
            info.insert("epostadresse_oppdatert".into(), json!(ts(c.updated)));
            info.insert("epostadresse_sist_verifisert".into(), json!(ts(c.verified)));
        }
        if let Some(m) = &c.mobile {
            info.insert("mobiltelefonnummer".into(), json!(m));
            info.insert("mobiltelefonnummer_oppdatert".into(), json!(ts(c.updated)));
            info.insert(
                "mobiltelefonnummer_sist_verifisert".into(),
                json!(ts(c.verified)),
            );
        }
        out["kontaktinformasjon"] = Value::Object(info);
        out["spraak"] = json!(c.language);
        out["spraak_oppdatert"] = json!(ts(c.updated));
    }
    if mailbox_scope && let Some((address, provider)) = &c.mailbox {
        out["digital_post"] =
            json!({"postkasseadresse": address, "postkasseleverandoeradresse": provider});
    }
    out
}

fn contact_of<'a>(population: &'a Population, id: &str) -> Option<&'a Contact> {
    // KRR knows a person by the ID in use only.
    population
        .persons
        .iter()
        .find(|p| p.id() == id)
        .map(|p| &population.contacts[p.key])
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonsRequest {
    personidentifikatorer: Vec<String>,
    #[serde(default)]
    inkluder_ikke_registrerte: Option<bool>,
}

pub async fn persons(
    State(shared): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let scopes = match authorize(&shared, &headers, &version).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let request: PersonsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {e}"),
            );
        }
    };
    if request.personidentifikatorer.is_empty() || request.personidentifikatorer.len() > MAX_IDS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("personidentifikatorer must hold 1 to {MAX_IDS} identifiers"),
        );
    }
    if let Some(bad) = request
        .personidentifikatorer
        .iter()
        .find(|id| folkhub_core::ids::parse_norwegian(id).is_err())
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("invalid personidentifikator {bad}"),
        );
    }
    let population = shared.population.read().await;
    let include_unregistered =
        version == "v1" || request.inkluder_ikke_registrerte.unwrap_or(false);
    let list: Vec<Value> = request
        .personidentifikatorer
        .iter()
        .map(|id| person(id, contact_of(&population, id), scopes))
        .filter(|p| include_unregistered || p["status"] != "IKKE_REGISTRERT")
        .collect();
    Json(json!({"personer": list})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangesQuery {
    fra_endrings_nummer: Option<u64>,
}

pub async fn changes(
    State(shared): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ChangesQuery>,
) -> Response {
    let scopes = match authorize(&shared, &headers, &version).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let from = q.fra_endrings_nummer.unwrap_or(1).max(1);
    let population = shared.population.read().await;
    let latest = population.krr_changes.len() as u64;
    let page: Vec<&crate::population::KrrChange> = population
        .krr_changes
        .iter()
        .skip(from as usize - 1)
        .take(PAGE)
        .collect();
    let to = page.last().map_or(from.saturating_sub(1), |c| c.number);
    let list: Vec<Value> = page
        .iter()
        .map(|c| {
            let p = &population.persons[c.person];
            person(p.id(), Some(&population.contacts[c.person]), scopes)
        })
        .collect();
    Json(json!({"fraEndringsNummer": from, "tilEndringsNummer": to, "senesteEndringsNummer": latest, "personer": list})).into_response()
}

pub fn router() -> axum::Router<Shared> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/rest/{version}/personer", post(persons))
        .route("/rest/{version}/endringer", get(changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::Population;
    use crate::wire;

    /// Every answer, under every combination of scopes, holds to the members
    /// Digdir documents, and carries a scope's members only under it.
    #[test]
    fn answers_hold_to_the_documented_members_and_scopes() {
        let population = Population::generate(9, 400);
        let table = wire::table("krr-v2").unwrap_or_else(|e| panic!("{e}"));
        const CONTACT: &[&str] = &[
            "varslingsstatus",
            "kontaktinformasjon",
            "spraak",
            "spraak_oppdatert",
        ];
        const MAILBOX: &[&str] = &["digital_post", "sertifikat"];
        for scopes in [(true, true), (true, false), (false, true), (false, false)] {
            let list: Vec<Value> = population
                .persons
                .iter()
                .map(|p| person(p.id(), contact_of(&population, p.id()), scopes))
                .collect();
            let answer = json!({"personer": list});
            if let Err(problems) = table.check_json(&answer) {
                panic!("{scopes:?}: {:?}", &problems[..problems.len().min(5)]);
            }
            for p in &list {
                for key in CONTACT {
                    assert!(
                        scopes.0 || p.get(*key).is_none(),
                        "{key} without the contact scope: {p}"
                    );
                }
                for key in MAILBOX {
                    assert!(
                        scopes.1 || p.get(*key).is_none(),
                        "{key} without the mailbox scope: {p}"
                    );
                }
            }
        }
    }
}
