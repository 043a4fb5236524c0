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
//! Every element is written in its component's own namespace, as the
//! 2021.1 XSDs of SPAR's reference implementation define them
//! (`simulators/wire/spar-2021.1.toml` lists them with their sources; a
//! test holds every answer to that table). As the real service: persons
//! with sekretessmarkering or skyddad folkbokföring come back with only
//! `PersonId` and the markers; relations (`VÅRDNADSHAVARE`) only when the
//! customer holds and asks for the extended permission `Relationer`, and
//! `SvenskMedborgare` only with `Medborgarskap`; namespace prefixes vary
//! between answers, and every third answer redeclares default namespaces
//! instead ([`Style`]), so clients must read namespace URIs.
//!
//! Undantag codes (the simulator's; SPAR documents its own list to
//! customers): `1` identification refused (customer numbers or assignment),
//! `2` extended permission not granted, `3` malformed search (IdNummer not
//! 12 digits with a valid check digit, no criteria, or a search argument
//! not of its Sokargument-1.2.xsd type), `4` malformed request.
//!
//! A person whose samordningsnummer was replaced by a personnummer has a
//! `Hanvisning` from the old number (`Typ` `Fran`) in `Persondetaljer`.
//!
//! Change notifications: `GET /filtransport/avisering/{n}` serves avisering
//! files (`AviseringPoster` of `AviseringPost`, AviseringPost-1.2.xsd),
//! numbered from 1 (every person in the customer's selection), then one
//! file per batch of changes; 404 until the next file exists. A file
//! carries the terms the customer ordered (here: with its extended
//! permissions).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;

use crate::nordic::SePerson;
use crate::population::{Gender, Population};
use crate::xml::{envelope, esc, soap_fault};
use crate::{Shared, soap_fault_response};

/// The 2021.1 SOAPAction, question and answer namespaces and path (see
/// [`soap_action`], [`ns_question`], [`ns_answer`] for any version).
pub const SOAP_ACTION: &str =
    "http://skatteverket.se/spar/personsok/2021.1/PersonsokService/Personsok";
pub const NS_QUESTION: &str =
    "http://statenspersonadressregister.se/schema/personsok/2021.1/personsokningfraga";
pub const NS_ANSWER: &str =
    "http://statenspersonadressregister.se/schema/personsok/2021.1/personsokningsvar";
pub const NS_IDENTIFICATION: &str = "http://statenspersonadressregister.se/schema/komponent/metadata/identifieringsinformationWs-1.1";
pub const NS_SEARCH: &str =
    "http://statenspersonadressregister.se/schema/komponent/sok/personsokningsokparametrar-1.1";
pub const NS_PERSON: &str =
    "http://statenspersonadressregister.se/schema/komponent/person/person-1.2";
pub const NS_ARGUMENT: &str =
    "http://statenspersonadressregister.se/schema/komponent/sok/sokargument-1.2";
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
        extended: &["Relationer", "Medborgarskap"],
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

/// The component namespaces of a 2021.1 person post, each its own (SPAR's
/// answers put every component in a namespace of its own: see
/// simulators/wire/spar-2021.1.toml and docs/simulators.md for the XSDs).
const COMPONENTS: &[(&str, &str)] = &[
    (
        "person",
        "http://statenspersonadressregister.se/schema/komponent/person/person-1.2",
    ),
    (
        "skydd",
        "http://statenspersonadressregister.se/schema/komponent/person/skyddadepersonuppgifter-1.1",
    ),
    (
        "namn",
        "http://statenspersonadressregister.se/schema/komponent/person/namn/namn-1.0",
    ),
    (
        "namnelement",
        "http://statenspersonadressregister.se/schema/komponent/person/namn/deladenamnelement-1.0",
    ),
    (
        "datumtid",
        "http://statenspersonadressregister.se/schema/komponent/generellt/datumtid-1.1",
    ),
    (
        "pdt",
        "http://statenspersonadressregister.se/schema/komponent/person/persondetaljer-1.2",
    ),
    (
        "avreg",
        "http://statenspersonadressregister.se/schema/komponent/person/avregistrering-1.0",
    ),
    (
        "hanvisning",
        "http://statenspersonadressregister.se/schema/komponent/person/hanvisning-1.0",
    ),
    (
        "fb",
        "http://statenspersonadressregister.se/schema/komponent/person/folkbokforing-1.0",
    ),
    (
        "fba",
        "http://statenspersonadressregister.se/schema/komponent/person/adress/folkbokforingsadress-1.1",
    ),
    (
        "spa",
        "http://statenspersonadressregister.se/schema/komponent/person/adress/sarskildpostadress-1.1",
    ),
    (
        "adress",
        "http://statenspersonadressregister.se/schema/komponent/person/adress/deladeadresselement-1.1",
    ),
    (
        "relation",
        "http://statenspersonadressregister.se/schema/komponent/person/relation-1.2",
    ),
    (
        "undantag",
        "http://statenspersonadressregister.se/schema/komponent/sok/undantag-1.0",
    ),
    (
        "post",
        "http://statenspersonadressregister.se/schema/komponent/person/aviseringpost-1.2",
    ),
];

/// How an answer binds its namespaces. The real service varies: prefixes
/// `ns2`…`ns15` bound on the answer's root in an order that changes, or
/// default-namespace redeclarations on the elements themselves. Clients
/// must read namespace URIs, never prefixes.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// Every namespace bound to a prefix on the root, rotated by `n`.
    Prefixes(u64),
    /// No prefixes: each element whose namespace differs from its parent's
    /// redeclares the default namespace.
    Defaults,
}

impl Style {
    /// The style of the `n`th answer: both kinds, and prefixes that move.
    pub fn nth(n: u64) -> Style {
        if n % 3 == 2 {
            Style::Defaults
        } else {
            Style::Prefixes(n)
        }
    }
}

/// Writes elements in the namespaces of [`COMPONENTS`] (plus the answer's).
struct Writer {
    out: String,
    style: Style,
    answer_ns: String,
    /// Default namespace in force at each open element (Defaults style).
    open: Vec<(String, String)>,
}

impl Writer {
    fn new(style: Style, version: &str) -> Writer {
        Writer {
            out: String::new(),
            style,
            answer_ns: ns_answer(version),
            open: vec![],
        }
    }

    fn uri(&self, short: &str) -> String {
        if short == "svar" {
            return self.answer_ns.clone();
        }
        COMPONENTS
            .iter()
            .find(|(s, _)| *s == short)
            .map(|(_, u)| u.to_string())
            .unwrap_or_default()
    }

    fn prefix(&self, short: &str) -> String {
        let Style::Prefixes(n) = self.style else {
            return String::new();
        };
        let index = COMPONENTS
            .iter()
            .position(|(s, _)| *s == short)
            .map_or(0, |i| i + 1) as u64;
        format!("ns{}", 2 + (index + n) % 16)
    }

    /// Declarations for the root element (Prefixes style).
    fn declarations(&self) -> String {
        match self.style {
            Style::Defaults => String::new(),
            Style::Prefixes(_) => std::iter::once("svar")
                .chain(COMPONENTS.iter().map(|(s, _)| *s))
                .map(|s| format!(" xmlns:{}=\"{}\"", self.prefix(s), self.uri(s)))
                .collect(),
        }
    }

    fn start(&mut self, short: &str, name: &str, attributes: &str, root: bool) -> String {
        let uri = self.uri(short);
        match self.style {
            Style::Prefixes(_) => {
                let declarations = if root {
                    self.declarations()
                } else {
                    String::new()
                };
                let tag = format!("{}:{name}", self.prefix(short));
                self.out
                    .push_str(&format!("<{tag}{declarations}{attributes}>"));
                tag
            }
            Style::Defaults => {
                let inherited = self.open.last().map(|(_, d)| d.as_str()).unwrap_or("");
                let declaration = if inherited == uri {
                    String::new()
                } else {
                    format!(" xmlns=\"{uri}\"")
                };
                self.out
                    .push_str(&format!("<{name}{declaration}{attributes}>"));
                name.to_string()
            }
        }
    }

    fn open(&mut self, short: &str, name: &str) {
        self.open_with(short, name, "", false);
    }

    fn open_with(&mut self, short: &str, name: &str, attributes: &str, root: bool) {
        let tag = self.start(short, name, attributes, root);
        let uri = self.uri(short);
        self.open.push((tag, uri));
    }

    fn close(&mut self) {
        if let Some((tag, _)) = self.open.pop() {
            self.out.push_str(&format!("</{tag}>"));
        }
    }

    fn leaf_with(&mut self, short: &str, name: &str, attributes: &str, text: &str) {
        let tag = self.start(short, name, attributes, false);
        self.out.push_str(&format!("{}</{tag}>", esc(text)));
    }

    fn leaf(&mut self, short: &str, name: &str, text: &str) {
        self.leaf_with(short, name, "", text);
    }

    /// `DatumFrom`/`DatumTill` of a current post (history is asked for).
    fn period(&mut self, from: &str) {
        self.leaf("datumtid", "DatumFrom", from);
        self.leaf("datumtid", "DatumTill", "9999-12-31");
    }
}

/// SPAR's Tilltalsnamn code for a person: which of the given names is the
/// call name (first digit, 1-based), a second digit for a second name.
/// Synthetic: every third person with two given names is called by the
/// second.
pub fn call_name_code(person: &SePerson) -> Option<&'static str> {
    let names = person.given.split(' ').count();
    match names {
        0 => None,
        1 => Some("10"),
        _ if person.key.is_multiple_of(3) => Some("20"),
        _ => Some("10"),
    }
}

/// The person's distrikt (DistriktKod: six digits, not starting with 0);
/// synthetic, derived from the municipality.
pub fn district_code(person: &SePerson) -> Option<String> {
    let a = person.address.as_ref()?;
    Some(format!(
        "1{}{}{}",
        a.county,
        a.municipality,
        1 + person.key % 9
    ))
}

/// A special postal address (särskild postadress) for some persons:
/// synthetic, every seventh person with an address.
pub fn special_postal_address(person: &SePerson) -> Option<(String, String, &'static str)> {
    let a = person.address.as_ref()?;
    (person.key.is_multiple_of(7)).then(|| {
        (
            format!("Box {}", 100 + person.key),
            a.postal_code.clone(),
            a.city,
        )
    })
}

/// The extended permissions a question asked for (and the customer holds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Extended {
    /// `Relationer`: custodians in `Relation`.
    pub relations: bool,
    /// `Medborgarskap`: `SvenskMedborgare`.
    pub citizenship: bool,
}

fn write_post(w: &mut Writer, population: &Population, person: &SePerson, extended: Extended) {
    let kind = if person.is_coordination() {
        "SAMORDNINGSNUMMER"
    } else {
        "PERSONNUMMER"
    };
    w.open("person", "PersonId");
    w.leaf("person", "IdNummer", person.id());
    w.leaf("person", "Typ", kind);
    w.close();
    match person.secrecy {
        Some(since) => {
            // SPAR set the marker itself when it follows skyddad folkbokföring.
            let by_spar = if person.protected.is_some() {
                " sattAvSPAR=\"JA\""
            } else {
                ""
            };
            w.leaf_with("skydd", "Sekretessmarkering", by_spar, "JA");
            w.leaf("skydd", "SekretessDatum", &day(since));
        }
        None => w.leaf("skydd", "Sekretessmarkering", "NEJ"),
    }
    match person.protected {
        Some(since) => {
            w.leaf("skydd", "SkyddadFolkbokforing", "JA");
            w.leaf("skydd", "SkyddadFolkbokforingDatum", &day(since));
        }
        None => w.leaf("skydd", "SkyddadFolkbokforing", "NEJ"),
    }
    w.leaf(
        "person",
        "SenasteAndringSPAR",
        &day(person.updated.date_naive()),
    );
    if person.is_protected() {
        return;
    }
    w.open("namn", "Namn");
    w.period("2000-01-01");
    w.leaf("namnelement", "Fornamn", &person.given);
    if let Some(code) = call_name_code(person) {
        w.leaf("namnelement", "Tilltalsnamn", code);
    }
    if let Some(m) = &person.middle {
        w.leaf("namnelement", "Mellannamn", m);
    }
    w.leaf("namnelement", "Efternamn", &person.family);
    w.close();
    w.open("pdt", "Persondetaljer");
    w.period(&day(person.birth));
    if let Some((code, date)) = person.deregistered {
        w.leaf("avreg", "AvregistreringsorsakKod", code);
        // Avregistreringsdatum is given for every cause but death, which
        // has Avlidendatum (Avregistrering-1.0.xsd).
        if code == "AV" {
            w.leaf("avreg", "Avlidendatum", &day(date));
        } else {
            w.leaf("avreg", "Avregistreringsdatum", &day(date));
        }
    }
    w.leaf("pdt", "Fodelsedatum", &day(person.birth));
    w.leaf(
        "pdt",
        "Kon",
        match person.gender {
            Gender::Female => "KVINNA",
            Gender::Male => "MAN",
        },
    );
    if extended.citizenship {
        w.leaf(
            "pdt",
            "SvenskMedborgare",
            if person.citizen { "JA" } else { "NEJ" },
        );
    }
    // Earlier IDs (a samordningsnummer replaced by a personnummer): a
    // Hanvisning from the old number.
    for earlier in &person.ids[..person.ids.len().saturating_sub(1)] {
        w.open("hanvisning", "Hanvisning");
        w.leaf("person", "IdNummer", earlier);
        w.leaf("hanvisning", "Typ", "Fran");
        w.close();
    }
    w.close();
    if let Some(a) = &person.address {
        w.open("fb", "Folkbokforing");
        w.period(&day(a.since));
        w.leaf("fb", "FolkbokfordLanKod", a.county);
        w.leaf("fb", "FolkbokfordKommunKod", a.municipality);
        w.leaf("fb", "Hemvist", "Skriven på adressen");
        w.leaf("fb", "Folkbokforingsdatum", &day(a.since));
        if let Some(d) = district_code(person) {
            w.leaf("fb", "DistriktKod", &d);
        }
        w.close();
        w.open("fba", "Folkbokforingsadress");
        w.open("adress", "SvenskAdress");
        w.period(&day(a.since));
        if let Some(c) = &a.care_of {
            w.leaf("adress", "CareOf", c);
        }
        w.leaf("adress", "Utdelningsadress2", &a.line);
        w.leaf("adress", "PostNr", &a.postal_code);
        w.leaf("adress", "Postort", a.city);
        w.close();
        w.close();
        if let Some((line, postal_code, city)) = special_postal_address(person) {
            w.open("spa", "SarskildPostadress");
            w.open("adress", "SvenskAdress");
            w.period(&day(a.since));
            w.leaf("adress", "Utdelningsadress2", &line);
            w.leaf("adress", "PostNr", &postal_code);
            w.leaf("adress", "Postort", city);
            w.close();
            w.close();
        }
    }
    if extended.relations {
        for g in &person.guardians {
            let guardian = &population.swedes[*g];
            if guardian.deregistered.is_some() {
                continue;
            }
            w.open("relation", "Relation");
            w.period(&day(person.birth));
            w.leaf("relation", "Relationstyp", "VÅRDNADSHAVARE");
            w.leaf("person", "IdNummer", guardian.id());
            w.close();
        }
    }
}

/// What an answer holds.
pub enum Content<'a> {
    /// Person posts (relations read from the population).
    Posts(&'a Population, Vec<&'a SePerson>),
    Undantag(&'a str, &'a str),
    TooMany(usize, usize),
}

/// A whole `SPARPersonsokningSvar` envelope of a version in a style.
pub fn answer_with(
    version: &str,
    style: Style,
    content: Content,
    extended: Extended,
    n: u64,
) -> String {
    let mut w = Writer::new(style, version);
    w.open_with("svar", "SPARPersonsokningSvar", "", true);
    match content {
        Content::Posts(population, persons) => {
            for person in persons {
                w.open("svar", "PersonsokningSvarspost");
                write_post(&mut w, population, person, extended);
                w.close();
            }
        }
        Content::Undantag(code, text) => {
            w.open("undantag", "Undantag");
            w.leaf("undantag", "Kod", code);
            w.leaf("undantag", "Beskrivning", text);
            w.close();
        }
        Content::TooMany(found, max) => {
            w.open("undantag", "OverstigerMaxAntalSvarsposter");
            w.leaf("undantag", "AntalPoster", &found.to_string());
            w.leaf("undantag", "MaxAntalSvarsposter", &max.to_string());
            w.close();
        }
    }
    w.leaf("svar", "UUID", &uuid_like(n));
    w.close();
    envelope(&w.out)
}

/// An avisering file: `AviseringPoster` holding one `AviseringPost` per
/// person (AviseringPost-1.2.xsd); its sequence number is the file's. It
/// carries the terms the customer ordered: for the simulator's customer,
/// with its extended permissions (relations and citizenship).
pub fn avisering_file(
    population: &Population,
    persons: &[&SePerson],
    style: Style,
    extended: Extended,
) -> String {
    let mut w = Writer::new(style, "2021.1");
    w.open_with("post", "AviseringPoster", "", true);
    for person in persons {
        w.open("post", "AviseringPost");
        write_post(&mut w, population, person, extended);
        w.close();
    }
    w.close();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{}", w.out)
}

fn uuid_like(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn undantag(shared: &Shared, version: &str, code: &str, text: &str) -> Response {
    let n = shared.requests();
    xml(
        StatusCode::OK,
        answer_with(
            version,
            Style::nth(n),
            Content::Undantag(code, text),
            Extended::default(),
            n,
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
    let extended = Extended {
        relations: asked.contains(&"Relationer"),
        citizenship: asked.contains(&"Medborgarskap"),
    };
    let population = shared.population.read().await;
    let n = shared.requests();
    let reply = |content: Content| {
        xml(
            StatusCode::OK,
            answer_with(&version, Style::nth(n), content, extended, n),
        )
    };
    if let Some(id) = crate::xml::child_text(question, NS_PERSON, "IdNummer") {
        if id.len() != 12 || folkhub_core::ids::parse_swedish(id).is_err() {
            return undantag(
                &shared,
                &version,
                "3",
                &format!("Felaktigt IdNummer {id:?}: tolv siffror med giltig kontrollsiffra"),
            );
        }
        let found: Vec<&SePerson> = population.find_swede(id).into_iter().collect();
        return reply(Content::Posts(&population, found));
    }
    // Criteria (Sokargument-1.2.xsd): name arguments whose words match the
    // person's names in any order, `*` a wildcard; birth date; postal code.
    let arg = |name: &str| crate::xml::child_text(question, NS_ARGUMENT, name);
    let criteria = Criteria {
        names: arg("NamnSokArgument"),
        given: arg("FornamnSokArgument"),
        middle_family: arg("MellanEfternamnSokArgument"),
        birth: arg("Fodelsedatum"),
        postal_code: arg("PostNr"),
        county: arg("LanKod"),
        municipality: arg("KommunKod"),
    };
    if criteria.is_empty() {
        return undantag(
            &shared,
            &version,
            "3",
            "Sökningen saknar IdNummer och sökbegrepp",
        );
    }
    // Each argument has Sokargument-1.2's type; SPAR refuses the search
    // otherwise.
    for (name, kind) in [
        ("NamnSokArgument", "sokargument:1..80"),
        ("FornamnSokArgument", "sokargument:1..80"),
        ("MellanEfternamnSokArgument", "sokargument:1..60"),
        ("Fodelsedatum", "date"),
        ("PostNr", "pattern-postnr"),
        ("LanKod", "digits:2"),
        ("KommunKod", "digits:2"),
    ] {
        if let Some(value) = arg(name)
            && let Err(why) = crate::wire::check_value(kind, value, false)
        {
            return undantag(
                &shared,
                &version,
                "3",
                &format!("Felaktigt sökbegrepp {name}: {why}"),
            );
        }
    }
    if criteria.municipality.is_some() && criteria.county.is_none() {
        return undantag(
            &shared,
            &version,
            "3",
            "Felaktigt sökbegrepp KommunKod: kräver LanKod",
        );
    }
    let hits: Vec<&SePerson> = population
        .swedes
        .iter()
        .filter(|p| !p.is_protected())
        .filter(|p| criteria.matches(p))
        .collect();
    if hits.len() > MAX_HITS {
        return reply(Content::TooMany(hits.len(), MAX_HITS));
    }
    reply(Content::Posts(&population, hits))
}

/// A PersonSök search by what is known of a person (Sokargument-1.2.xsd).
#[derive(Debug, Default, Clone, Copy)]
struct Criteria<'a> {
    /// `NamnSokArgument`: given, middle and family names, in any order.
    names: Option<&'a str>,
    /// `FornamnSokArgument`: given names, in any order.
    given: Option<&'a str>,
    /// `MellanEfternamnSokArgument`: middle and family names.
    middle_family: Option<&'a str>,
    /// `Fodelsedatum`: YYYY-MM-DD.
    birth: Option<&'a str>,
    /// `PostNr`: the folkbokföringsadress's postal code.
    postal_code: Option<&'a str>,
    /// `LanKod`: the län of the folkbokföring (two digits).
    county: Option<&'a str>,
    /// `KommunKod`: the kommun within the län (two digits; unique only
    /// with `LanKod`, as Sokargument-1.2.xsd says).
    municipality: Option<&'a str>,
}

impl Criteria<'_> {
    fn is_empty(&self) -> bool {
        self.names.is_none()
            && self.given.is_none()
            && self.middle_family.is_none()
            && self.birth.is_none()
            && self.postal_code.is_none()
            && self.county.is_none()
            && self.municipality.is_none()
    }

    fn matches(&self, p: &SePerson) -> bool {
        let given: Vec<&str> = p.given.split_whitespace().collect();
        let mut middle_family: Vec<&str> = p
            .middle
            .as_deref()
            .map(|m| m.split_whitespace().collect())
            .unwrap_or_default();
        middle_family.extend(p.family.split_whitespace());
        let all: Vec<&str> = given.iter().chain(&middle_family).copied().collect();
        self.names.is_none_or(|a| words_match(a, &all))
            && self.given.is_none_or(|a| words_match(a, &given))
            && self
                .middle_family
                .is_none_or(|a| words_match(a, &middle_family))
            && self.birth.is_none_or(|b| day(p.birth) == b)
            && self.postal_code.is_none_or(|code| {
                p.address
                    .as_ref()
                    .is_some_and(|a| a.postal_code.replace(' ', "") == code)
            })
            && self
                .county
                .is_none_or(|c| p.address.as_ref().is_some_and(|a| a.county == c))
            && self
                .municipality
                .is_none_or(|m| p.address.as_ref().is_some_and(|a| a.municipality == m))
    }
}

/// Every word of a search argument matches one of `names` (in any order,
/// case not counted, `*` standing for any letters).
fn words_match(argument: &str, names: &[&str]) -> bool {
    argument.split_whitespace().all(|word| {
        names
            .iter()
            .any(|name| wildcard(&word.to_lowercase(), &name.to_lowercase()))
    })
}

/// `pattern` with `*` as any run of characters, against the whole of `text`.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
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
    let persons: Vec<&SePerson> = file
        .persons
        .iter()
        .map(|k| &population.swedes[*k])
        .collect();
    xml(
        StatusCode::OK,
        avisering_file(
            &population,
            &persons,
            Style::nth(number),
            Extended {
                relations: true,
                citizenship: true,
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    fn check(table: &wire::Table, xml: &str) {
        if let Err(problems) = table.check_xml(xml) {
            panic!(
                "{} {}: {} problems, first {:?}\n{xml}",
                table.register,
                table.version,
                problems.len(),
                &problems[..problems.len().min(5)]
            );
        }
    }

    /// Name arguments as Sokargument-1.2.xsd documents them: words in any
    /// order, `*` a wildcard, given names apart from middle and family names.
    #[test]
    fn search_arguments_match_as_the_schema_documents() {
        assert!(wildcard("anders*", "andersson"));
        assert!(wildcard("*son", "andersson"));
        assert!(wildcard("a*s*n", "andersson"));
        assert!(!wildcard("anders", "andersson"));
        assert!(!wildcard("b*", "andersson"));
        assert!(words_match(
            "Andersson Karl",
            &["Karl", "Johan", "Andersson"]
        ));
        assert!(words_match("joh*", &["Karl", "Johan"]));
        assert!(!words_match("Karl Svensson", &["Karl", "Andersson"]));
        let population = Population::generate(42, 600);
        let p = population
            .swedes
            .iter()
            .find(|p| p.address.is_some() && !p.is_protected())
            .expect("a Swede with an address");
        let birth = day(p.birth);
        let code = p
            .address
            .as_ref()
            .map(|a| a.postal_code.replace(' ', ""))
            .unwrap_or_default();
        let given = p
            .given
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let family = p.family.clone();
        let both = format!("{family} {given}");
        let hit = |c: Criteria| c.matches(p);
        assert!(hit(Criteria {
            names: Some(&both),
            birth: Some(&birth),
            ..Criteria::default()
        }));
        assert!(hit(Criteria {
            given: Some(&given),
            middle_family: Some(&family),
            postal_code: Some(&code),
            ..Criteria::default()
        }));
        assert!(
            !hit(Criteria {
                given: Some(&family),
                middle_family: Some(&given),
                ..Criteria::default()
            }) || given == family
        );
        assert!(!hit(Criteria {
            names: Some(&both),
            birth: Some("1800-01-01"),
            ..Criteria::default()
        }));
        assert!(!hit(Criteria {
            names: Some(&both),
            postal_code: Some("99999"),
            ..Criteria::default()
        }));
        let a = p.address.as_ref().expect("address");
        assert!(hit(Criteria {
            names: Some(&both),
            county: Some(a.county),
            municipality: Some(a.municipality),
            ..Criteria::default()
        }));
        assert!(!hit(Criteria {
            names: Some(&both),
            county: Some(if a.county == "01" { "02" } else { "01" }),
            municipality: Some(a.municipality),
            ..Criteria::default()
        }));
    }

    /// Every answer the simulator can give, in both namespace styles and
    /// both versions, holds to the element table written from SPAR's XSDs.
    #[test]
    fn every_answer_holds_to_the_published_schema() {
        let population = Population::generate(42, 600);
        assert!(population.swedes.len() > 100);
        for version in VERSIONS {
            let table = wire::table(&format!("spar-{version}")).unwrap_or_else(|e| panic!("{e}"));
            for (n, person) in population.swedes.iter().enumerate() {
                for relations in [false, true] {
                    let extended = Extended {
                        relations,
                        citizenship: relations,
                    };
                    let xml = answer_with(
                        version,
                        Style::nth(n as u64 + u64::from(relations)),
                        Content::Posts(&population, vec![person]),
                        extended,
                        n as u64,
                    );
                    check(&table, &xml);
                }
            }
            for style in [Style::Prefixes(0), Style::Prefixes(7), Style::Defaults] {
                check(
                    &table,
                    &answer_with(
                        version,
                        style,
                        Content::Posts(&population, vec![]),
                        Extended::default(),
                        1,
                    ),
                );
                check(
                    &table,
                    &answer_with(
                        version,
                        style,
                        Content::Undantag("1", "Felaktig identifieringsinformation"),
                        Extended::default(),
                        2,
                    ),
                );
                check(
                    &table,
                    &answer_with(
                        version,
                        style,
                        Content::TooMany(140, MAX_HITS),
                        Extended::default(),
                        3,
                    ),
                );
            }
        }
        let table = wire::table("spar-2021.1").unwrap_or_else(|e| panic!("{e}"));
        for file in &population.spar_files {
            let persons: Vec<&SePerson> = file
                .persons
                .iter()
                .map(|k| &population.swedes[*k])
                .collect();
            for style in [Style::Prefixes(file.number), Style::Defaults] {
                check(
                    &table,
                    &avisering_file(
                        &population,
                        &persons,
                        style,
                        Extended {
                            relations: true,
                            citizenship: true,
                        },
                    ),
                );
            }
        }
    }

    /// The variants occur: protected persons, deaths, coordination numbers
    /// replaced, call names, districts, special postal addresses.
    #[test]
    fn the_population_exercises_every_variant() {
        let population = Population::generate(42, 2000);
        let swedes = &population.swedes;
        assert!(swedes.iter().any(|p| p.protected.is_some()));
        assert!(
            swedes
                .iter()
                .any(|p| p.secrecy.is_some() && p.protected.is_none())
        );
        assert!(
            swedes
                .iter()
                .any(|p| matches!(p.deregistered, Some(("AV", _))))
        );
        assert!(swedes.iter().any(|p| p.ids.len() > 1));
        assert!(swedes.iter().any(|p| call_name_code(p) == Some("20")));
        assert!(
            swedes
                .iter()
                .any(|p| special_postal_address(p).is_some() && !p.is_protected())
        );
        let xml = answer_with(
            "2021.1",
            Style::Defaults,
            Content::Posts(&population, swedes.iter().collect()),
            Extended {
                relations: true,
                citizenship: true,
            },
            0,
        );
        assert!(xml.contains("xmlns=\"http://statenspersonadressregister.se/schema/komponent/person/namn/deladenamnelement-1.0\""));
        let xml = answer_with(
            "2021.1",
            Style::Prefixes(3),
            Content::Posts(&population, swedes.iter().collect()),
            Extended {
                relations: true,
                citizenship: true,
            },
            0,
        );
        assert!(!xml.contains("<Namn"), "prefixed");
    }
}
