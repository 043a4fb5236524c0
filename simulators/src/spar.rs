//! SPAR PersonSök program-program 2021.1 (Sweden): SOAP 1.1 over mutual
//! TLS, served only on the simulator's TLS port.
//!
//! `POST /2021.1/personsok` (the path of the real service) with `SOAPAction:
//! http://skatteverket.se/spar/personsok/2021.1/PersonsokService/Personsok`
//! and a `SPARPersonsokningFraga` holding `Identifieringsinformation`
//! (customer numbers, assignment, end user, extended permissions) and one
//! `PersonsokningFraga` (an `IdNummer`, or search criteria). The answer is
//! a `SPARPersonsokningSvar` with `PersonsokningSvarspost`s, an `Undantag`,
//! or `OverstigerMaxAntalSvarsposter`.
//!
//! As the real service: persons with sekretessmarkering or skyddad
//! folkbokföring come back with only `PersonId` and the markers; relations
//! (`VÅRDNADSHAVARE`) only when the customer holds and asks for the
//! extended permission `Relationer`; namespace prefixes vary between
//! answers, so clients must read namespace URIs.
//!
//! Undantag codes (the simulator's; SPAR documents its own list to
//! customers): `1` identification refused (customer numbers or assignment),
//! `2` extended permission not granted, `3` malformed search (IdNummer not
//! 12 digits with a valid check digit, or no criteria), `4` malformed request.
//!
//! A person whose samordningsnummer was replaced by a personnummer carries
//! the old number as `HanvisningsPersonNr` (the term Navet uses; the exact
//! SPAR element for it is inferred).
//!
//! Change notifications: `GET /filtransport/avisering/{sekvensnummer}`
//! serves avisering files (`AviseringPoster`), numbered from 1 (a
//! nulägesavisering of every person in the customer's selection), then one
//! ändringsavisering per batch of changes; 404 until the next file exists.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;

use crate::nordic::SePerson;
use crate::population::{Gender, Population};
use crate::xml::{el, envelope, esc, soap_fault};
use crate::{Shared, soap_fault_response};

/// The 2021.1 SOAPAction, question and answer namespaces and path (see
/// [`soap_action`], [`ns_question`], [`ns_answer`] for any version).
pub const SOAP_ACTION: &str =
    "http://skatteverket.se/spar/personsok/2021.1/PersonsokService/Personsok";
pub const NS_QUESTION: &str =
    "http://statenspersonadressregister.se/schema/personsok/2021.1/personsokningfraga";
pub const NS_ANSWER: &str =
    "http://statenspersonadressregister.se/schema/personsok/2021.1/personsokningsvar";
pub const NS_IDENTIFICATION: &str = "http://statenspersonadressregister.se/schema/komponent/metadata/identifieringsinformationWs-1.0";
pub const NS_SEARCH: &str =
    "http://statenspersonadressregister.se/schema/komponent/sok/personsokningsokparametrar-1.1";
pub const NS_PERSON: &str =
    "http://statenspersonadressregister.se/schema/komponent/person/person-1.2";
pub const NS_NOTIFICATION: &str =
    "http://statenspersonadressregister.se/schema/avisering/2021.1/aviseringsposter";
pub const PATH: &str = "/2021.1/personsok";
/// The PersonSök versions served side by side (each retired by a sunset
/// `spar-<version>`). 2023.1 is served with 2021.1's content under its own
/// path, SOAPAction and namespaces: the content changes of 2023.1 are known
/// only from SPAR's change notes.
pub const VERSIONS: &[&str] = &["2021.1", "2023.1"];

/// The SOAPAction of a PersonSök version.
pub fn soap_action(version: &str) -> String {
    format!("http://skatteverket.se/spar/personsok/{version}/PersonsokService/Personsok")
}

/// The namespace of the question of a PersonSök version.
pub fn ns_question(version: &str) -> String {
    format!("http://statenspersonadressregister.se/schema/personsok/{version}/personsokningfraga")
}

/// The namespace of the answer of a PersonSök version.
pub fn ns_answer(version: &str) -> String {
    format!("http://statenspersonadressregister.se/schema/personsok/{version}/personsokningsvar")
}
/// Most hits a criteria search returns.
pub const MAX_HITS: usize = 100;

/// A SPAR customer: numbers, assignment and extended permissions.
#[derive(Debug, Clone)]
pub struct Customer {
    pub delivery: &'static str,
    pub end_customer: &'static str,
    pub assignment: &'static str,
    pub extended: &'static [&'static str],
}

/// The customers the simulator knows.
pub const CUSTOMERS: &[Customer] = &[
    Customer {
        delivery: "500243",
        end_customer: "500243",
        assignment: "637",
        extended: &["Relationer"],
    },
    Customer {
        delivery: "500244",
        end_customer: "500244",
        assignment: "638",
        extended: &[],
    },
];

pub fn router() -> axum::Router<Shared> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/{version}/personsok", post(personsok))
        .route("/filtransport/avisering/{number}", get(avisering))
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "text/xml; charset=utf-8")], body).into_response()
}

fn client_fault(message: &str) -> Response {
    xml(
        StatusCode::INTERNAL_SERVER_ERROR,
        soap_fault("soap:Client", message),
    )
}

fn day(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// The content of one person post (`PersonsokningSvarspost` or
/// `AviseringPost`) with the person namespace bound to prefix `p`.
pub fn person_post(population: &Population, person: &SePerson, p: &str, relations: bool) -> String {
    let e = |name: &str, text: &str| format!("<{p}:{name}>{}</{p}:{name}>", esc(text));
    let mut x = String::new();
    let kind = if person.is_coordination() {
        "SAMORDNINGSNUMMER"
    } else {
        "PERSONNUMMER"
    };
    x.push_str(&format!(
        "<{p}:PersonId>{}{}</{p}:PersonId>",
        e("IdNummer", person.id()),
        e("Typ", kind)
    ));
    // Earlier IDs (a samordningsnummer replaced by a personnummer) refer
    // to the current one.
    for earlier in &person.ids[..person.ids.len() - 1] {
        x.push_str(&e("HanvisningsPersonNr", earlier));
    }
    match person.secrecy {
        Some(since) => {
            // SPAR set the marker itself when it follows skyddad folkbokföring.
            let by_spar = if person.protected.is_some() {
                " sattAvSPAR=\"JA\""
            } else {
                ""
            };
            x.push_str(&format!(
                "<{p}:Sekretessmarkering{by_spar}>JA</{p}:Sekretessmarkering>"
            ));
            x.push_str(&e("SekretessDatum", &day(since)));
        }
        None => x.push_str(&e("Sekretessmarkering", "NEJ")),
    }
    match person.protected {
        Some(since) => {
            x.push_str(&e("SkyddadFolkbokforing", "JA"));
            x.push_str(&e("SkyddadFolkbokforingDatum", &day(since)));
        }
        None => x.push_str(&e("SkyddadFolkbokforing", "NEJ")),
    }
    x.push_str(&e("SenasteAndringSPAR", &day(person.updated.date_naive())));
    if person.is_protected() {
        return x;
    }
    x.push_str(&format!("<{p}:Namn>"));
    x.push_str(&e("DatumFrom", "2000-01-01"));
    x.push_str(&e("DatumTill", "9999-12-31"));
    x.push_str(&e("Fornamn", &person.given));
    if let Some(m) = &person.middle {
        x.push_str(&e("Mellannamn", m));
    }
    x.push_str(&e("Efternamn", &person.family));
    x.push_str(&format!("</{p}:Namn>"));
    x.push_str(&format!("<{p}:Persondetaljer>"));
    x.push_str(&e("DatumFrom", &day(person.birth)));
    x.push_str(&e("DatumTill", "9999-12-31"));
    x.push_str(&e("Fodelsedatum", &day(person.birth)));
    x.push_str(&e(
        "Kon",
        match person.gender {
            Gender::Female => "KVINNA",
            Gender::Male => "MAN",
        },
    ));
    x.push_str(&e(
        "SvenskMedborgare",
        if person.citizen { "JA" } else { "NEJ" },
    ));
    if let Some((code, date)) = person.deregistered {
        x.push_str(&e("AvregistreringsorsakKod", code));
        x.push_str(&e("Avregistreringsdatum", &day(date)));
        if code == "AV" {
            x.push_str(&e("Avlidendatum", &day(date)));
        }
    }
    x.push_str(&format!("</{p}:Persondetaljer>"));
    if let Some(a) = &person.address {
        x.push_str(&format!(
            "<{p}:Folkbokforing>{}{}{}{}{}{}</{p}:Folkbokforing>",
            e("DatumFrom", &day(a.since)),
            e("DatumTill", "9999-12-31"),
            e("FolkbokfordLanKod", a.county),
            e("FolkbokfordKommunKod", a.municipality),
            e("Hemvist", "Skriven i kommunen"),
            e("Folkbokforingsdatum", &day(a.since)),
        ));
        let care_of = a
            .care_of
            .as_deref()
            .map(|c| e("CareOf", c))
            .unwrap_or_default();
        x.push_str(&format!(
            "<{p}:Folkbokforingsadress><{p}:SvenskAdress>{}{}{care_of}{}{}{}</{p}:SvenskAdress></{p}:Folkbokforingsadress>",
            e("DatumFrom", &day(a.since)),
            e("DatumTill", "9999-12-31"),
            e("Utdelningsadress2", &a.line),
            e("PostNr", &a.postal_code),
            e("Postort", a.city),
        ));
    }
    if relations {
        for g in &person.guardians {
            let guardian = &population.swedes[*g];
            if guardian.deregistered.is_some() {
                continue;
            }
            x.push_str(&format!(
                "<{p}:Relation>{}{}{}{}</{p}:Relation>",
                e("DatumFrom", &day(person.birth)),
                e("DatumTill", "9999-12-31"),
                e("Relationstyp", "VÅRDNADSHAVARE"),
                e("IdNummer", guardian.id()),
            ));
        }
    }
    x
}

/// Prefixes vary between answers, as the real service's do.
fn prefix(shared: &Shared) -> String {
    format!("ns{}", 2 + shared.requests() % 13)
}

fn answer(shared: &Shared, version: &str, p: &str, content: &str) -> String {
    answer_for(version, p, content, shared.requests())
}

/// A whole 2021.1 `SPARPersonsokningSvar` envelope around `content`, with
/// the person namespace bound to prefix `p`.
pub fn answer_xml(p: &str, content: &str, n: u64) -> String {
    answer_for("2021.1", p, content, n)
}

/// The same for any served version.
pub fn answer_for(version: &str, p: &str, content: &str, n: u64) -> String {
    envelope(&format!(
        "<svar:SPARPersonsokningSvar xmlns:svar=\"{}\" xmlns:{p}=\"{NS_PERSON}\">{content}<svar:UUID>{}</svar:UUID></svar:SPARPersonsokningSvar>",
        ns_answer(version),
        uuid_like(n)
    ))
}

fn uuid_like(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn undantag(shared: &Shared, version: &str, code: &str, text: &str) -> Response {
    xml(
        StatusCode::OK,
        answer(
            shared,
            version,
            "p",
            &format!(
                "<svar:Undantag>{}{}</svar:Undantag>",
                el("svar:Kod", code),
                el("svar:Beskrivning", text)
            ),
        ),
    )
}

async fn personsok(
    State(shared): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    shared.count_request();
    if !VERSIONS.contains(&version.as_str()) {
        return (
            StatusCode::NOT_FOUND,
            format!("PersonSök {version} does not exist"),
        )
            .into_response();
    }
    if let Some(date) = shared.retired(&format!("spar-{version}")) {
        return (
            StatusCode::GONE,
            [("content-type", "text/plain")],
            format!("PersonSök {version} was retired on {date}; use a newer version"),
        )
            .into_response();
    }
    if let Some(r) = soap_fault_response(&shared).await {
        return r;
    }
    let expected_action = soap_action(&version);
    let question_ns = ns_question(&version);
    let action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"');
    if action != expected_action {
        return client_fault(&format!(
            "Unknown SOAPAction {action:?}; this endpoint serves {expected_action}"
        ));
    }
    let Ok(doc) = roxmltree::Document::parse(&body) else {
        return client_fault("The request is not well-formed XML");
    };
    let Some(question) = crate::xml::soap_body(&doc).filter(|n| {
        n.tag_name().name() == "SPARPersonsokningFraga"
            && n.tag_name().namespace() == Some(question_ns.as_str())
    }) else {
        return client_fault(&format!(
            "Expected SPARPersonsokningFraga in {question_ns} inside a SOAP 1.1 envelope"
        ));
    };
    let id_text =
        |name: &str| crate::xml::child_text(question, NS_IDENTIFICATION, name).unwrap_or_default();
    let Some(customer) = CUSTOMERS.iter().find(|c| {
        c.delivery == id_text("KundNrLeveransMottagare")
            && c.end_customer == id_text("KundNrSlutkund")
            && c.assignment == id_text("UppdragId")
    }) else {
        return undantag(
            &shared,
            &version,
            "1",
            "Felaktig identifieringsinformation: kundnummer eller uppdrag saknas eller är okända",
        );
    };
    if id_text("SlutAnvandarId").is_empty() {
        return undantag(&shared, &version, "1", "SlutAnvandarId saknas");
    }
    let asked: Vec<&str> = question
        .descendants()
        .filter(|n| {
            n.tag_name().name() == "SlutAnvandarUtokadBehorighet"
                && n.tag_name().namespace() == Some(NS_IDENTIFICATION)
        })
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    if let Some(refused) = asked.iter().find(|a| !customer.extended.contains(a)) {
        return undantag(
            &shared,
            &version,
            "2",
            &format!("Kunden saknar utökad behörighet {refused}"),
        );
    }
    let relations = asked.contains(&"Relationer");
    let population = shared.population.read().await;
    let p = prefix(&shared);
    if let Some(id) = crate::xml::child_text(question, NS_SEARCH, "IdNummer") {
        if id.len() != 12 || folkhub_core::ids::parse_swedish(id).is_err() {
            return undantag(
                &shared,
                &version,
                "3",
                &format!("Felaktigt IdNummer {id:?}: tolv siffror med giltig kontrollsiffra"),
            );
        }
        let content = match population.find_swede(id) {
            Some(person) => format!(
                "<svar:PersonsokningSvarspost>{}</svar:PersonsokningSvarspost>",
                person_post(&population, person, &p, relations)
            ),
            None => String::new(),
        };
        return xml(StatusCode::OK, answer(&shared, &version, &p, &content));
    }
    // Criteria: family name and optionally birth date.
    let family = crate::xml::child_text(question, NS_SEARCH, "NamnSokArgument");
    let birth = crate::xml::child_text(question, NS_SEARCH, "Fodelsedatum");
    if family.is_none() && birth.is_none() {
        return undantag(
            &shared,
            &version,
            "3",
            "Sökningen saknar IdNummer och sökbegrepp",
        );
    }
    let hits: Vec<&SePerson> = population
        .swedes
        .iter()
        .filter(|p| !p.is_protected())
        .filter(|p| family.is_none_or(|f| p.family.eq_ignore_ascii_case(f)))
        .filter(|p| birth.is_none_or(|b| day(p.birth) == b))
        .collect();
    if hits.len() > MAX_HITS {
        return xml(
            StatusCode::OK,
            answer(
                &shared,
                &version,
                &p,
                &format!(
                    "<svar:OverstigerMaxAntalSvarsposter>{}{}</svar:OverstigerMaxAntalSvarsposter>",
                    el("svar:AntalPoster", &hits.len().to_string()),
                    el("svar:MaxAntalSvarsposter", &MAX_HITS.to_string())
                ),
            ),
        );
    }
    let content: String = hits
        .iter()
        .map(|person| {
            format!(
                "<svar:PersonsokningSvarspost>{}</svar:PersonsokningSvarspost>",
                person_post(&population, person, &p, relations)
            )
        })
        .collect();
    xml(StatusCode::OK, answer(&shared, &version, &p, &content))
}

async fn avisering(State(shared): State<Shared>, Path(number): Path<u64>) -> Response {
    shared.count_request();
    if let Some(r) = soap_fault_response(&shared).await {
        return r;
    }
    let population = shared.population.read().await;
    let Some(file) = population.spar_files.iter().find(|f| f.number == number) else {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain")],
            format!("No avisering file {number} yet"),
        )
            .into_response();
    };
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a:AviseringPoster xmlns:a=\"{NS_NOTIFICATION}\" xmlns:p=\"{NS_PERSON}\">{}{}{}",
        el("a:Sekvensnummer", &file.number.to_string()),
        el("a:Aviseringstyp", file.kind),
        el(
            "a:Skapad",
            &file.created.format("%Y-%m-%dT%H:%M:%S").to_string()
        ),
    );
    for key in &file.persons {
        x.push_str("<a:AviseringPost>");
        x.push_str(&person_post(
            &population,
            &population.swedes[*key],
            "p",
            false,
        ));
        x.push_str("</a:AviseringPost>");
    }
    x.push_str("</a:AviseringPoster>");
    xml(StatusCode::OK, x)
}
