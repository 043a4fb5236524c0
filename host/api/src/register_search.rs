//! `POST /v1/persons/search`: search the registers by identifying details
//! (names, birth date, place) when the ID is not known.
//!
//! The question goes to every register that can search (contract 2.2
//! `search`: SPAR PersonSök); the store is not searched (that is `GET
//! /v1/persons`). What a client learns is bounded as for any read:
//! - Only clients that may have the registers asked (`--fetch`) may search
//!   (each search is a paid call), and only with a legal basis that covers
//!   names and birth dates.
//! - Each hit is shown as the client's basis allows; a person whose
//!   protection the basis does not see past is not shown at all, as in the
//!   store's search, and `limit` counts the persons shown, so neither the
//!   number of hits nor the "narrow your search" answer says that a
//!   protected person matched. (A register's own limit, more than 100
//!   matches for SPAR, counts everyone; only a broad search reaches it.)
//! - Nothing is stored and nobody is followed: the client confirms a hit
//!   by following one of its IDs (`PUT /v1/follows/{id}`), and a read then
//!   fetches the person.
//! - The search is written to the access log with its criteria and the IDs
//!   of the persons shown, and the register calls to the cost ledger under
//!   `search:CLIENT`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use folkhub_core::access;
use folkhub_core::contract::SearchQuery;
use folkhub_read::{RegisterSearch, SearchOutcomeKind, Selection, search_hit};
use folkhub_store::{AccessEntry, StoredId};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::extract::JsonBody;
use crate::persons::{log_entries, may_ask_registers, reads_names, register_error};
use crate::{ApiError, ApiState};

/// The most persons one search shows.
pub const LIMIT_MAX: u32 = 100;
/// What a register is asked to return at most: the host counts the persons
/// the client may see against `limit` itself.
const REGISTER_MAX: u32 = 100;

/// A search of the registers.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterSearchRequest {
    /// Family (and middle) names, words in any order; `*` stands for any
    /// letters within a word (`Lind*`). At least two letters besides `*`.
    #[schema(example = "Lindqvist")]
    family: String,
    /// Given names, words in any order; `*` as in `family`.
    #[serde(default)]
    #[schema(example = "Anna")]
    given: Option<String>,
    /// `YYYY-MM-DD`. A search needs a birth date, a postal code or a
    /// municipality besides the names.
    #[serde(default)]
    #[schema(example = "1984-03-12", format = Date)]
    birth_date: Option<String>,
    /// The registered address's postal code (spaces are ignored).
    #[serde(default)]
    #[schema(example = "41319")]
    postal_code: Option<String>,
    /// The registered address's municipality code (SE: four digits, län and
    /// kommun, e.g. `1480` for Göteborg).
    #[serde(default)]
    #[schema(example = "1480")]
    municipality: Option<String>,
    /// The most persons to show, 1 to 100 (default 20); when more match,
    /// the answer asks for a narrower search instead.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Fields or field groups to return; all the basis allows when left out.
    #[serde(default)]
    fields: Option<Vec<String>>,
}

/// A name as a register search takes it: letters, spaces, `-`, `'` and the
/// wildcard `*`, with at least two letters besides `*`.
fn name(value: &str, field: &str, max: usize) -> Result<String, ApiError> {
    let words = value.split_whitespace().collect::<Vec<_>>().join(" ");
    let allowed = words
        .chars()
        .all(|c| c.is_alphabetic() || c == ' ' || c == '-' || c == '\'' || c == '*');
    let letters = words.chars().filter(|c| c.is_alphabetic()).count();
    if !allowed || letters < 2 || !words.starts_with(char::is_alphabetic) {
        return Err(ApiError::bad(
            "invalid-parameter",
            field,
            format!(
                "{field} {value:?}: letters, spaces, '-', '\\'' and the wildcard '*', starting with a letter and with at least two letters"
            ),
        ));
    }
    if words.chars().count() > max {
        return Err(ApiError::bad(
            "invalid-parameter",
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(words)
}

fn digits(value: &str, field: &str, lengths: &[usize], what: &str) -> Result<String, ApiError> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.chars().all(|c| c.is_ascii_digit()) && lengths.contains(&compact.len()) {
        Ok(compact)
    } else {
        Err(ApiError::bad(
            "invalid-parameter",
            field,
            format!("{field} {value:?}: {what}"),
        ))
    }
}

/// `POST /v1/persons/search`.
#[utoipa::path(post, path = "/v1/persons/search", tag = "persons",
    request_body(content = crate::openapi::RegisterSearchRequest, content_type = "application/json"),
    responses((status = 200, description = "`outcome: hits`: the persons that match, as the client's legal basis lets it see them (persons whose protection it may not see past are not shown); nothing is stored or followed until the client follows a hit's ID. `outcome: narrow`: more than `limit` match; no person is shown, add given names, a postal code or a municipality", body = crate::openapi::RegisterSearch),
        (status = 400, description = "A missing or malformed criterion or field (`invalid-parameter`, `invalid-body`), or a search the register refused (`invalid-search`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The client may not have the registers asked (`fetch-not-allowed`), or its basis does not cover names and birth dates (`outside-basis`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No register this server asks can search (`no-register`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The registers are unavailable or their budget is spent", body = crate::openapi::ErrorBody),
        (status = 504, description = "The registers did not answer within `server.fetch_deadline` (`search-timeout`)", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn search(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<RegisterSearchRequest>,
) -> Result<Json<RegisterSearch>, ApiError> {
    may_ask_registers(&caller)?;
    reads_names(&caller)?;
    let selection = Selection::parse(
        request
            .fields
            .as_ref()
            .map(|f| f.iter().map(String::as_str)),
    )
    .map_err(|message| ApiError::bad("unknown-field", "fields", message))?;
    let limit = request.limit.unwrap_or(20);
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(ApiError::bad(
            "invalid-parameter",
            "limit",
            format!("limit {limit}: 1 to {LIMIT_MAX}"),
        ));
    }
    let birth_date = request.birth_date.as_deref().map(str::trim);
    if let Some(birth_date) = birth_date
        && (chrono::NaiveDate::parse_from_str(birth_date, "%Y-%m-%d").is_err()
            || birth_date.len() != 10)
    {
        return Err(ApiError::bad(
            "invalid-parameter",
            "birth_date",
            format!("birth_date {birth_date:?}: a date YYYY-MM-DD"),
        ));
    }
    if birth_date.is_none() && request.postal_code.is_none() && request.municipality.is_none() {
        return Err(ApiError::bad(
            "missing-parameter",
            "birth_date",
            "a search needs, besides the names, a birth_date (YYYY-MM-DD), a postal_code or a municipality",
        ));
    }
    let query = SearchQuery {
        family: Some(name(&request.family, "family", 60)?),
        given: request
            .given
            .as_deref()
            .filter(|g| !g.trim().is_empty())
            .map(|g| name(g, "given", 80))
            .transpose()?,
        birth_date: birth_date.map(String::from),
        postal_code: request
            .postal_code
            .as_deref()
            .map(|p| digits(p, "postal_code", &[4, 5], "a postal code of 4 or 5 digits"))
            .transpose()?,
        municipality: request
            .municipality
            .as_deref()
            .map(|m| {
                digits(
                    m,
                    "municipality",
                    &[3, 4],
                    "a municipality code of 3 or 4 digits (SE: län and kommun, e.g. 0180)",
                )
            })
            .transpose()?,
        max_hits: REGISTER_MAX,
    };
    let Some(fetcher) = state.fetch.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "fetch-unavailable",
            "this server does not ask the registers (it runs without connectors)",
        ));
    };
    // The search runs in a task of its own: a caller that stops waiting
    // does not stop the paid call from being recorded in the cost ledger.
    let task = {
        let (query, client) = (query.clone(), caller.client.name.clone());
        tokio::spawn(async move { fetcher.search(&query, &client).await })
    };
    let deadline = state.fetch_deadline;
    let searched = match tokio::time::timeout(deadline, task).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "search-timeout",
                format!(
                    "the registers did not answer within {} s; try again, or narrow the search",
                    deadline.as_secs_f64()
                ),
            ));
        }
        Ok(Err(joined)) => return Err(ApiError::internal(joined)),
        Ok(Ok(Err(e))) => return Err(register_error(e)),
        Ok(Ok(Ok(searched))) => searched,
    };
    // A person the basis may not see past is not shown, and is not counted.
    let shown: Vec<_> = searched
        .hits
        .iter()
        .filter(|h| access::findable(&h.record, &caller.basis))
        .collect();
    let narrow = searched.too_many.is_some() || shown.len() > limit as usize;
    let mut answer = RegisterSearch {
        outcome: SearchOutcomeKind::Hits,
        hits: Vec::new(),
        matched: None,
        message: None,
        registers: searched.asked.clone(),
    };
    let mut logged_ids = Vec::new();
    if narrow {
        answer.outcome = SearchOutcomeKind::Narrow;
        answer.matched = match searched.too_many {
            Some(n) => n,
            None => Some(shown.len() as u32),
        };
        answer.message = Some(format!(
            "more than {limit} persons match; add given names, a postal code or a municipality, or raise limit (at most {LIMIT_MAX})"
        ));
    } else {
        for hit in shown {
            let ids: Vec<StoredId> = hit
                .ids
                .iter()
                .map(|i| StoredId {
                    scheme: i.scheme.clone(),
                    value: i.value.clone(),
                    active: i.active,
                })
                .collect();
            if let Some(first) = ids.first() {
                logged_ids.push(format!("{}:{}", first.scheme, first.value));
            }
            let (view, _) = search_hit(
                ids,
                &hit.record,
                hit.sources.clone(),
                &caller.basis,
                selection.as_ref(),
            );
            answer.hits.push(view);
        }
    }
    // Each person shown counts against the client's quota, as a read does.
    state.quotas.charge(
        caller.client.id,
        caller.client.persons_per_minute,
        answer.hits.len(),
    );
    let criteria = json!({
        "registers": answer.registers,
        "family": query.family,
        "given": query.given,
        "birth_date": query.birth_date,
        "postal_code": query.postal_code,
        "municipality": query.municipality,
        "limit": limit,
        "outcome": if narrow { "narrow" } else { "hits" },
        "shown": logged_ids,
    });
    log_entries(
        &state,
        &caller,
        "POST /v1/persons/search",
        vec![(AccessEntry::SEARCH, Vec::new(), Some(criteria.to_string()))],
    )
    .await?;
    Ok(Json(answer))
}
