//! SPAR PersonSök (2021.1, or 2023.1 with feature-less builds) → catalogue
//! fields, and avisering files → changes.
//!
//! **Every component has its own namespace.** A person post
//! (`PersonsokningSvarspost`, `AviseringPost`) holds elements of a dozen
//! components, each in its own namespace under
//! `http://statenspersonadressregister.se/schema/komponent/...`: the ID in
//! `person/person-1.2`, the name in `person/namn/namn-1.0` with its parts in
//! `person/namn/deladenamnelement-1.0`, the markers in
//! `person/skyddadepersonuppgifter-1.1`, and so on ([`ns`], from the 2021.1
//! XSDs of SPAR's reference implementation; the table is
//! `simulators/wire/spar-2021.1.toml`). Elements are read by namespace URI,
//! never by prefix: answers bind them to `ns2`…`ns15` or redeclare default
//! namespaces.
//!
//! **An answer this release cannot read fails**, naming what it could not
//! read, instead of yielding an empty person: an element of the post in a
//! namespace this release does not know (a newer component version) is
//! `malformed-response`, which the host does not retry (SPAR charges per
//! call).
//!
//! **Coverage.** A person with sekretessmarkering or skyddad folkbokföring
//! comes back with only the ID and the markers: that answer does not cover
//! the location fields, so the stored address stays (protected by the
//! marker; the person has not moved), and covers the rest, which SPAR no
//! longer gives and which must not linger unprotected. Relations come only with the extended
//! permission `Relationer`, Swedish citizenship only with `Medborgarskap`:
//! without them those fields are not covered.
//!
//! Partial dates (`1980-00-00`, `1980`) are not dates: they are left out
//! with a warning, never completed.

use folkhub_connector_sdk::ids;
use folkhub_connector_sdk::soap::{self, child, children, esc};
use folkhub_connector_sdk::{MappedField, MappedPerson};
use roxmltree::Node;
use serde_json::{Value, json};

/// The PersonSök version this build speaks and its wire constants.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    pub version: &'static str,
    pub soap_action: &'static str,
    pub path: &'static str,
    pub ns_question: &'static str,
    pub ns_answer: &'static str,
}

/// 2021.1: `spar 1.x` (feature `upstream-2021-1`).
pub const V2021_1: Upstream = Upstream {
    version: "2021.1",
    soap_action: "http://skatteverket.se/spar/personsok/2021.1/PersonsokService/Personsok",
    path: "/2021.1/personsok",
    ns_question: "http://statenspersonadressregister.se/schema/personsok/2021.1/personsokningfraga",
    ns_answer: "http://statenspersonadressregister.se/schema/personsok/2021.1/personsokningsvar",
};

/// 2023.1: `spar 2.x`. The question and answer namespaces and the
/// SOAPAction are 2023.1's; the components are read as 2021.1's (SPAR's
/// 2023.1 XSDs are not public; see docs/simulators.md).
pub const V2023_1: Upstream = Upstream {
    version: "2023.1",
    soap_action: "http://skatteverket.se/spar/personsok/2023.1/PersonsokService/Personsok",
    path: "/2023.1/personsok",
    ns_question: "http://statenspersonadressregister.se/schema/personsok/2023.1/personsokningfraga",
    ns_answer: "http://statenspersonadressregister.se/schema/personsok/2023.1/personsokningsvar",
};

#[cfg(feature = "upstream-2021-1")]
pub const UPSTREAM: Upstream = V2021_1;
#[cfg(not(feature = "upstream-2021-1"))]
pub const UPSTREAM: Upstream = V2023_1;

pub const UPSTREAM_VERSION: &str = UPSTREAM.version;

/// The component namespaces (2021.1 XSDs; see the module docs).
pub mod ns {
    const BASE: &str = "http://statenspersonadressregister.se/schema/komponent/";
    macro_rules! component {
        ($name:ident, $path:literal) => {
            pub const $name: &str = concat!(
                "http://statenspersonadressregister.se/schema/komponent/",
                $path
            );
        };
    }
    component!(IDENTIFICATION, "metadata/identifieringsinformationWs-1.1");
    component!(SEARCH, "sok/personsokningsokparametrar-1.1");
    component!(ARGUMENT, "sok/sokargument-1.2");
    component!(EXCEPTION, "sok/undantag-1.0");
    component!(POST, "person/aviseringpost-1.2");
    component!(PERSON, "person/person-1.2");
    component!(PROTECTION, "person/skyddadepersonuppgifter-1.1");
    component!(NAME, "person/namn/namn-1.0");
    component!(NAME_PARTS, "person/namn/deladenamnelement-1.0");
    component!(PERIOD, "generellt/datumtid-1.1");
    component!(DETAILS, "person/persondetaljer-1.2");
    component!(DEREGISTRATION, "person/avregistrering-1.0");
    component!(REFERENCE, "person/hanvisning-1.0");
    component!(COORDINATION, "person/samordningsnummer-1.0");
    component!(REGISTRATION, "person/folkbokforing-1.0");
    component!(REGISTERED_ADDRESS, "person/adress/folkbokforingsadress-1.1");
    component!(SPECIAL_ADDRESS, "person/adress/sarskildpostadress-1.1");
    component!(FOREIGN_ADDRESS, "person/adress/utlandsadress-1.1");
    component!(CONTACT_ADDRESS, "person/adress/kontaktadress-1.0");
    component!(ADDRESS_PARTS, "person/adress/deladeadresselement-1.1");
    component!(RELATION, "person/relation-1.2");
    component!(PROPERTY, "person/fastighetstaxering-1.2");
    component!(INCOME, "person/inkomsttaxering-1.2");

    /// The namespaces a person post's elements may be in.
    pub const KNOWN: &[&str] = &[
        PERSON,
        PROTECTION,
        NAME,
        NAME_PARTS,
        PERIOD,
        DETAILS,
        DEREGISTRATION,
        REFERENCE,
        COORDINATION,
        REGISTRATION,
        REGISTERED_ADDRESS,
        SPECIAL_ADDRESS,
        FOREIGN_ADDRESS,
        CONTACT_ADDRESS,
        ADDRESS_PARTS,
        RELATION,
        PROPERTY,
        INCOME,
    ];

    /// Is `uri` a SPAR component namespace at all?
    pub fn is_spar_component(uri: &str) -> bool {
        uri.starts_with(BASE)
    }
}

/// PersonSök takes one question per call; a batch is this many calls.
pub const MAX_BATCH: usize = 100;

pub const FIELDS: &[&str] = &[
    "name.given",
    "name.call",
    "name.middle",
    "name.family",
    "birth.date",
    "gender",
    "status",
    "death.date",
    "citizenship",
    "address.residential",
    "address.postal",
    "address.municipality",
    "address.se-district",
    "protection.se-secrecy",
    "protection.se-protected-registration",
    "relations.family",
    "relations.parental-responsibility",
];

/// Location fields: a protected person's answer withholds them (no move).
const LOCATION: &[&str] = &[
    "address.residential",
    "address.postal",
    "address.municipality",
    "address.se-district",
];

/// Which extended permissions the question asked for (they decide what an
/// answer covers).
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    /// `Relationer`: custodians and spouses.
    pub relations: bool,
    /// `Medborgarskap`: Swedish citizenship.
    pub citizenship: bool,
}

impl Asked {
    pub fn from_list(extended: &[&str]) -> Asked {
        Asked {
            relations: extended.contains(&"Relationer"),
            citizenship: extended.contains(&"Medborgarskap"),
        }
    }
}

/// The question for one 12-digit ID. Customer numbers and the assignment
/// are host placeholders; `extended` lists extended permissions asked for
/// (e.g. `Relationer`).
pub fn request(id: &str, end_user: &str, extended: &[&str]) -> String {
    let extended: String = extended
        .iter()
        .map(|e| {
            format!(
                "<id:SlutAnvandarUtokadBehorighet>{}</id:SlutAnvandarUtokadBehorighet>",
                esc(e)
            )
        })
        .collect();
    soap::envelope(&format!(
        "<spar:SPARPersonsokningFraga xmlns:spar=\"{}\" xmlns:id=\"{}\" xmlns:sok=\"{}\" xmlns:person=\"{}\">\
         <id:Identifieringsinformation>\
         <id:KundNrLeveransMottagare>{}</id:KundNrLeveransMottagare>\
         <id:KundNrSlutkund>{}</id:KundNrSlutkund>\
         <id:UppdragId>{}</id:UppdragId>\
         <id:SlutAnvandarId>{}</id:SlutAnvandarId>{extended}\
         </id:Identifieringsinformation>\
         <sok:PersonsokningFraga><person:IdNummer>{}</person:IdNummer></sok:PersonsokningFraga>\
         </spar:SPARPersonsokningFraga>",
        UPSTREAM.ns_question,
        ns::IDENTIFICATION,
        ns::SEARCH,
        ns::PERSON,
        soap::secret("KundNrLeveransMottagare"),
        soap::secret("KundNrSlutkund"),
        soap::secret("UppdragId"),
        esc(end_user),
        esc(id),
    ))
}

use folkhub_connector_sdk::ConnectorError;
/// What one answer says about the requested ID.
pub use folkhub_connector_sdk::MappedOutcome as Outcome;

/// `YYYY-MM-DD` or `YYYYMMDD` as an ISO date; `None` for partial dates.
pub fn date(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 8 || !(text.len() == 8 || text.len() == 10) {
        return None;
    }
    let (y, m, d) = (&digits[..4], &digits[4..6], &digits[6..]);
    if m == "00" || d == "00" || y == "0000" {
        return None;
    }
    Some(format!("{y}-{m}-{d}"))
}

fn text<'a>(node: Node<'a, '_>, ns: &str, name: &str) -> Option<&'a str> {
    soap::child_text(node, ns, name)
}

/// The `SPARPersonsokningSvar` of an answer, in this version's namespace.
fn answer_root<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> Result<Node<'a, 'i>, String> {
    let answer = soap::body(doc)?;
    if answer.tag_name().name() != "SPARPersonsokningSvar"
        || answer.tag_name().namespace() != Some(UPSTREAM.ns_answer)
    {
        return Err(format!(
            "expected SPARPersonsokningSvar in {} (PersonSök {}), got {}{}",
            UPSTREAM.ns_answer,
            UPSTREAM.version,
            answer
                .tag_name()
                .namespace()
                .map(|n| format!("{{{n}}}"))
                .unwrap_or_default(),
            answer.tag_name().name()
        ));
    }
    Ok(answer)
}

/// An `Undantag` as the connector's error.
fn exception(answer: Node) -> Option<ConnectorError> {
    let exception = child(answer, ns::EXCEPTION, "Undantag")?;
    let code = text(exception, ns::EXCEPTION, "Kod").unwrap_or("?");
    let description = text(exception, ns::EXCEPTION, "Beskrivning").unwrap_or("");
    let message = format!("SPAR Undantag {code}: {description}");
    // SPAR's codes are documented to customers, not publicly: the
    // connector names the likely cause only where the text says it.
    let lower = description.to_lowercase();
    Some(
        if lower.contains("identifiering")
            || lower.contains("kundnummer")
            || lower.contains("uppdrag")
        {
            ConnectorError::Unauthorized(format!(
                "{message}; check the secrets KundNrLeveransMottagare, KundNrSlutkund and UppdragId"
            ))
        } else if lower.contains("behörighet") {
            ConnectorError::Unauthorized(format!(
                "{message}; remove the permission from config `extended` or ask SPAR for it"
            ))
        } else if lower.contains("sök") {
            // A search SPAR refused as malformed or too vague.
            ConnectorError::BadInput(message)
        } else {
            ConnectorError::Other(message)
        },
    )
}

/// What a search knows, as the contract passes it (`search.query`).
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    pub family: Option<String>,
    pub given: Option<String>,
    pub birth_date: Option<String>,
    pub postal_code: Option<String>,
    /// Kommunkod: four digits, län then kommun.
    pub municipality: Option<String>,
}

/// A name argument as Sokargument-1.2.xsd types it (`\w+[\w\s*\-']*`,
/// at most `max` characters): words, spaces, `*`, `-` and `'`, starting
/// with a letter or digit.
fn name_argument(what: &str, text: &str, max: usize) -> Result<String, String> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let ok_start = text.chars().next().is_some_and(char::is_alphanumeric);
    let ok_rest = text
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == ' ' || c == '*' || c == '-' || c == '\'');
    if !ok_start || !ok_rest {
        return Err(format!(
            "{what} {text:?}: SPAR takes letters, digits, spaces, `*`, `-` and `'`, starting with a letter"
        ));
    }
    if text.chars().count() > max {
        return Err(format!(
            "{what} is {} characters; SPAR takes at most {max}",
            text.chars().count()
        ));
    }
    Ok(text)
}

/// The question for a search (PersonsokningSokparametrar-1.1.xsd: the
/// arguments in the schema's order, each in Sokargument-1.2's namespace).
/// Given names go in `FornamnSokArgument`, family names in
/// `MellanEfternamnSokArgument` (SPAR matches middle and family names
/// there); the birth date in `Fodelsedatum`; the postal code in `PostNr`
/// (five digits, not starting with 0); the kommunkod's two halves in
/// `LanKod` and `KommunKod`. A value SPAR's schema refuses is an error
/// here, naming the value, before a paid call is made.
pub fn search_request(
    criteria: &Criteria,
    end_user: &str,
    extended: &[&str],
) -> Result<String, String> {
    let mut arguments = String::new();
    let mut push = |name: &str, value: &str| {
        arguments.push_str(&format!("<arg:{name}>{}</arg:{name}>", esc(value)));
    };
    if let Some(given) = criteria.given.as_deref() {
        push("FornamnSokArgument", &name_argument("given", given, 80)?);
    }
    if let Some(family) = criteria.family.as_deref() {
        push(
            "MellanEfternamnSokArgument",
            &name_argument("family", family, 60)?,
        );
    }
    if let Some(code) = criteria.postal_code.as_deref() {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let ok =
            code.len() == 5 && code.chars().all(|c| c.is_ascii_digit()) && !code.starts_with('0');
        if !ok {
            return Err(format!(
                "postal_code {code:?}: a Swedish postnummer is five digits, not starting with 0"
            ));
        }
        push("PostNr", &code);
    }
    if let Some(birth) = criteria.birth_date.as_deref() {
        let ok = date(birth).is_some_and(|d| d == birth);
        if !ok {
            return Err(format!("birth_date {birth:?}: a date YYYY-MM-DD"));
        }
        push("Fodelsedatum", birth);
    }
    if let Some(code) = criteria.municipality.as_deref() {
        if code.len() != 4 || !code.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "municipality {code:?}: a Swedish kommunkod is four digits (län and kommun, e.g. 0180)"
            ));
        }
        push("LanKod", &code[..2]);
        push("KommunKod", &code[2..]);
    }
    if arguments.is_empty() {
        return Err(
            "a search needs at least one of family, given, birth_date, postal_code, municipality"
                .into(),
        );
    }
    let extended: String = extended
        .iter()
        .map(|e| {
            format!(
                "<id:SlutAnvandarUtokadBehorighet>{}</id:SlutAnvandarUtokadBehorighet>",
                esc(e)
            )
        })
        .collect();
    Ok(soap::envelope(&format!(
        "<spar:SPARPersonsokningFraga xmlns:spar=\"{}\" xmlns:id=\"{}\" xmlns:sok=\"{}\" xmlns:arg=\"{}\">\
         <id:Identifieringsinformation>\
         <id:KundNrLeveransMottagare>{}</id:KundNrLeveransMottagare>\
         <id:KundNrSlutkund>{}</id:KundNrSlutkund>\
         <id:UppdragId>{}</id:UppdragId>\
         <id:SlutAnvandarId>{}</id:SlutAnvandarId>{extended}\
         </id:Identifieringsinformation>\
         <sok:PersonsokningFraga>{arguments}</sok:PersonsokningFraga>\
         </spar:SPARPersonsokningFraga>",
        UPSTREAM.ns_question,
        ns::IDENTIFICATION,
        ns::SEARCH,
        ns::ARGUMENT,
        soap::secret("KundNrLeveransMottagare"),
        soap::secret("KundNrSlutkund"),
        soap::secret("UppdragId"),
        esc(end_user),
    )))
}

/// What a search answer says.
#[derive(Debug, Clone)]
pub enum Found {
    /// Every post of the answer, mapped.
    Hits(Vec<MappedPerson>),
    /// `OverstigerMaxAntalSvarsposter`: more persons match than SPAR returns;
    /// `AntalPoster` when it says.
    TooMany(Option<u32>),
    /// An `Undantag`.
    Failed(ConnectorError),
}

/// Maps the answer to a search: its posts, too many, or an `Undantag`.
pub fn map_search(xml: &str, asked: Asked, warnings: &mut Vec<String>) -> Result<Found, String> {
    let doc = soap::parse(xml, "SPAR answer")?;
    let answer = answer_root(&doc)?;
    if let Some(error) = exception(answer) {
        return Ok(Found::Failed(error));
    }
    if let Some(too_many) = child(answer, ns::EXCEPTION, "OverstigerMaxAntalSvarsposter") {
        return Ok(Found::TooMany(
            text(too_many, ns::EXCEPTION, "AntalPoster").and_then(|n| n.trim().parse().ok()),
        ));
    }
    children(answer, UPSTREAM.ns_answer, "PersonsokningSvarspost")
        .map(|post| map_post(post, None, asked, warnings))
        .collect::<Result<Vec<_>, _>>()
        .map(Found::Hits)
}

/// Maps the answer to the question for `requested`.
pub fn map_answer(
    xml: &str,
    requested: &str,
    asked: Asked,
    warnings: &mut Vec<String>,
) -> Result<Outcome, String> {
    let doc = soap::parse(xml, "SPAR answer")?;
    let answer = answer_root(&doc)?;
    if let Some(error) = exception(answer) {
        return Ok(Outcome::Failed(error));
    }
    if let Some(too_many) = child(answer, ns::EXCEPTION, "OverstigerMaxAntalSvarsposter") {
        return Ok(Outcome::Failed(ConnectorError::BadInput(format!(
            "SPAR found {} persons, more than it returns ({}); narrow the search",
            text(too_many, ns::EXCEPTION, "AntalPoster").unwrap_or("?"),
            text(too_many, ns::EXCEPTION, "MaxAntalSvarsposter").unwrap_or("?"),
        ))));
    }
    let posts: Vec<Node> = children(answer, UPSTREAM.ns_answer, "PersonsokningSvarspost").collect();
    match posts.as_slice() {
        [] => Ok(Outcome::NotFound),
        [one] => Ok(Outcome::Found(map_post(
            *one,
            Some(requested),
            asked,
            warnings,
        )?)),
        more => Err(format!(
            "an ID search gave {} persons; SPAR gives at most one",
            more.len()
        )),
    }
}

fn yes(node: Node, ns: &str, name: &str) -> bool {
    text(node, ns, name) == Some("JA")
}

/// Is this post in force today? Posts without `DatumFrom`/`DatumTill` are
/// current (history not asked for); with them, `DatumTill` 9999-12-31
/// marks the current one (DatumTid-1.1.xsd).
fn current(node: Node) -> bool {
    text(node, ns::PERIOD, "DatumTill").is_none_or(|t| t.starts_with("9999"))
}

fn from(node: Node) -> Option<String> {
    text(node, ns::PERIOD, "DatumFrom")
        .and_then(date)
        .map(|d| format!("{d}T00:00:00Z"))
}

/// Every element of the post is in a namespace this release reads; an
/// unknown SPAR component (a newer version) makes the answer unreadable.
fn check_namespaces(post: Node) -> Result<(), String> {
    for node in post.descendants().filter(|n| n.is_element() && *n != post) {
        let uri = node.tag_name().namespace().unwrap_or_default();
        if !ns::KNOWN.contains(&uri) {
            return Err(if ns::is_spar_component(uri) {
                format!(
                    "element {} is in the SPAR component {uri}, which this release (PersonSök {}) does not read; a release for the component's version is needed",
                    node.tag_name().name(),
                    UPSTREAM.version
                )
            } else {
                format!(
                    "element {} in namespace {uri:?} is not a SPAR component of PersonSök {}",
                    node.tag_name().name(),
                    UPSTREAM.version
                )
            });
        }
    }
    Ok(())
}

fn swedish_address(a: Node, municipality: Option<&str>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), json!("postal"));
    if let Some(c) = text(a, ns::ADDRESS_PARTS, "CareOf") {
        m.insert("care_of".into(), json!(c));
    }
    let lines: Vec<&str> = ["Utdelningsadress1", "Utdelningsadress2"]
        .iter()
        .filter_map(|n| text(a, ns::ADDRESS_PARTS, n))
        .collect();
    m.insert("lines".into(), json!(lines));
    if let Some(v) = text(a, ns::ADDRESS_PARTS, "PostNr") {
        m.insert("postal_code".into(), json!(v.replace(' ', "")));
    }
    if let Some(v) = text(a, ns::ADDRESS_PARTS, "Postort") {
        m.insert("city".into(), json!(v));
    }
    if let Some(code) = municipality {
        m.insert("municipality".into(), json!(code));
    }
    m.insert("country".into(), json!("SWE"));
    Value::Object(m)
}

fn international_address(a: Node) -> Value {
    let lines: Vec<&str> = [
        "Utdelningsadress1",
        "Utdelningsadress2",
        "Utdelningsadress3",
    ]
    .iter()
    .filter_map(|n| text(a, ns::ADDRESS_PARTS, n))
    .collect();
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), json!("foreign"));
    m.insert("lines".into(), json!(lines));
    // SPAR gives the country as a name, not a code: kept as sent.
    if let Some(land) = text(a, ns::ADDRESS_PARTS, "Land") {
        m.insert("country".into(), json!(land));
    }
    Value::Object(m)
}

/// The call name: Tilltalsnamn is a two-digit code saying which of the
/// given names the person is called by (first digit, 1-based; a second
/// non-zero digit adds a second name, joined with a hyphen).
pub fn call_name(given: &str, code: &str) -> Option<String> {
    let parts: Vec<&str> = given.split([' ', '-']).filter(|p| !p.is_empty()).collect();
    let digit = |i: usize| code.chars().nth(i).and_then(|c| c.to_digit(10));
    let first = parts.get((digit(0)? as usize).checked_sub(1)?)?;
    match digit(1) {
        Some(0) | None => Some(first.to_string()),
        Some(n) => Some(format!("{first}-{}", parts.get(n as usize - 1)?)),
    }
}

/// Maps one person post (`PersonsokningSvarspost` or `AviseringPost`).
pub fn map_post(
    post: Node,
    requested: Option<&str>,
    asked: Asked,
    warnings: &mut Vec<String>,
) -> Result<MappedPerson, String> {
    check_namespaces(post)?;
    let mut p = MappedPerson::default();
    let person_id = child(post, ns::PERSON, "PersonId").ok_or(
        "a person post without PersonId in person-1.2: this is not a PersonSök 2021.1 post",
    )?;
    let id_text = text(person_id, ns::PERSON, "IdNummer").ok_or("PersonId without IdNummer")?;
    let id = ids::parse_swedish(id_text).map_err(|e| format!("PersonId/IdNummer: {e}"))?;
    // The scheme comes from the number (day + 60 is a samordningsnummer);
    // `Typ` is free text in the XSD.
    let mut own = (id.scheme.as_str().to_string(), id.value.clone(), true);
    let details: Vec<Node> = children(post, ns::DETAILS, "Persondetaljer")
        .filter(|n| current(*n))
        .collect();
    let mut others = Vec::new();
    for reference in details
        .iter()
        .flat_map(|d| children(*d, ns::REFERENCE, "Hanvisning"))
    {
        let Some(other) = text(reference, ns::PERSON, "IdNummer") else {
            continue;
        };
        match ids::parse_swedish(other) {
            Ok(o) => match text(reference, ns::REFERENCE, "Typ") {
                // The person moved to a new number: it is the one in use.
                Some("Till") => {
                    own.2 = false;
                    others.push((o.scheme.as_str().to_string(), o.value, true));
                }
                _ => others.push((o.scheme.as_str().to_string(), o.value, false)),
            },
            Err(e) => warnings.push(format!("Hanvisning/IdNummer: {e}")),
        }
    }
    p.ids.push(own);
    p.ids.extend(others);
    if let Some(asked) = requested.and_then(|r| ids::parse_swedish(r).ok())
        && !p.ids.iter().any(|(_, v, _)| *v == asked.value)
    {
        p.ids
            .push((asked.scheme.as_str().to_string(), asked.value, false));
    }
    let secrecy = yes(post, ns::PROTECTION, "Sekretessmarkering")
        || details
            .iter()
            .any(|d| yes(*d, ns::PROTECTION, "Sekretessmarkering"));
    let protected = yes(post, ns::PROTECTION, "SkyddadFolkbokforing")
        || details
            .iter()
            .any(|d| yes(*d, ns::PROTECTION, "SkyddadFolkbokforing"));
    if secrecy {
        p.push("protection.se-secrecy", json!(true), &[]);
    }
    if protected {
        p.push("protection.se-protected-registration", json!(true), &[]);
    }
    let name = children(post, ns::NAME, "Namn").find(|n| current(*n));
    let withheld = (secrecy || protected) && name.is_none() && details.is_empty();
    let mut covers: Vec<&'static str> = FIELDS.to_vec();
    if !asked.relations {
        covers.retain(|f| !f.starts_with("relations."));
    }
    if !asked.citizenship {
        covers.retain(|f| *f != "citizenship");
    }
    if withheld {
        // SPAR sends nothing but the ID and the markers. The location is
        // withheld, not moved: not covered, so the stored address stays and
        // the marker protects it. The rest SPAR no longer gives this
        // customer: covered, so a name stored before does not linger
        // without protection.
        covers.retain(|f| !LOCATION.contains(f));
        p.covers = Some(covers);
        return Ok(p);
    }
    p.covers = Some(covers);
    if let Some(name) = name {
        let given = text(name, ns::NAME_PARTS, "Fornamn");
        if let Some(v) = given {
            p.push("name.given", json!(v), &[]);
        }
        if let Some(code) = text(name, ns::NAME_PARTS, "Tilltalsnamn") {
            match given.and_then(|g| call_name(g, code)) {
                Some(call) => p.push("name.call", json!(call), &[]),
                None => warnings.push(format!(
                    "Tilltalsnamn {code:?} names no given name of {given:?}; name.call left out"
                )),
            }
        }
        if let Some(v) = text(name, ns::NAME_PARTS, "Mellannamn") {
            p.push("name.middle", json!(v), &[]);
        }
        if let Some(v) = text(name, ns::NAME_PARTS, "Efternamn") {
            p.push("name.family", json!(v), &[]);
        }
    }
    if let Some(d) = details.first().copied() {
        if let Some(b) = text(d, ns::DETAILS, "Fodelsedatum") {
            match date(b) {
                Some(b) => p.push("birth.date", json!(b), &[]),
                None => warnings.push(format!(
                    "Fodelsedatum {b:?} is partial; birth.date left out"
                )),
            }
        }
        match text(d, ns::DETAILS, "Kon") {
            Some("KVINNA") => p.push("gender", json!("female"), &[]),
            Some("MAN") => p.push("gender", json!("male"), &[]),
            Some(other) => warnings.push(format!("unknown Kon {other:?}; gender left out")),
            None => {}
        }
        if yes(d, ns::DETAILS, "SvenskMedborgare") {
            p.push("citizenship", json!(["SWE"]), &[]);
        }
        let code = text(d, ns::DEREGISTRATION, "AvregistreringsorsakKod");
        let status = match code {
            // Two-letter codes; the one-letter codes of older data:
            // A avliden, G gammalt nummer, O övrig orsak (Avregistrering-1.0.xsd).
            Some("AV" | "A") => "deceased",
            Some("UV") => "emigrated",
            Some("GN" | "GS" | "AN" | "TA" | "OB" | "FI" | "G" | "O") => "ceased",
            Some(other) => {
                warnings.push(format!(
                    "unknown AvregistreringsorsakKod {other:?}; status ceased"
                ));
                "ceased"
            }
            None if own_scheme_is_coordination(&p) => "not-resident",
            None => "resident",
        };
        p.push("status", json!(status), &[]);
        let death = text(d, ns::DEREGISTRATION, "Avlidendatum")
            .map(|t| ("Avlidendatum", t))
            .or_else(|| {
                text(d, ns::DEREGISTRATION, "AntraffadDodDatum").map(|t| ("AntraffadDodDatum", t))
            });
        if let Some((element, dd)) = death {
            match date(dd) {
                Some(dd) => p.push("death.date", json!(dd), &[]),
                None => warnings.push(format!("{element} {dd:?} is partial; death.date left out")),
            }
        }
    }
    let registration = children(post, ns::REGISTRATION, "Folkbokforing").find(|n| current(*n));
    let municipality = registration.and_then(|r| {
        Some(format!(
            "{}{}",
            text(r, ns::REGISTRATION, "FolkbokfordLanKod")?,
            text(r, ns::REGISTRATION, "FolkbokfordKommunKod")?
        ))
    });
    if let Some(address) = children(post, ns::REGISTERED_ADDRESS, "Folkbokforingsadress")
        .filter_map(|a| child(a, ns::ADDRESS_PARTS, "SvenskAdress"))
        .find(|a| current(*a))
    {
        p.fields.push(MappedField {
            path: "address.residential",
            value: swedish_address(address, municipality.as_deref()),
            labels: vec![],
            effective: from(address),
        });
    }
    if let Some(special) = children(post, ns::SPECIAL_ADDRESS, "SarskildPostadress").find_map(|s| {
        if let Some(a) = child(s, ns::ADDRESS_PARTS, "SvenskAdress").filter(|a| current(*a)) {
            Some((swedish_address(a, None), from(a)))
        } else {
            child(s, ns::ADDRESS_PARTS, "InternationellAdress")
                .filter(|a| current(*a))
                .map(|a| (international_address(a), from(a)))
        }
    }) {
        p.fields.push(MappedField {
            path: "address.postal",
            value: special.0,
            labels: vec![],
            effective: special.1,
        });
    }
    if let Some(m) = municipality {
        p.push("address.municipality", json!(m), &[]);
    }
    if let Some(d) = registration.and_then(|r| text(r, ns::REGISTRATION, "DistriktKod")) {
        p.push("address.se-district", json!(d), &[]);
    }
    let mut custody: Vec<(String, String)> = Vec::new();
    let mut family: Vec<(String, String)> = Vec::new();
    for r in children(post, ns::RELATION, "Relation").filter(|r| current(*r)) {
        let Some(kind) = text(r, ns::RELATION, "Relationstyp") else {
            continue;
        };
        let Some(other) = text(r, ns::PERSON, "IdNummer") else {
            // Only a Fodelsetid: a person SPAR has no number for.
            warnings.push(format!("a {kind} relation without IdNummer left out"));
            continue;
        };
        let other = match ids::parse_swedish(other) {
            Ok(o) => o.value,
            Err(e) => {
                warnings.push(format!("Relation/IdNummer: {e}"));
                continue;
            }
        };
        match kind {
            "VÅRDNADSHAVARE" => custody.push(("other".into(), other)),
            "MAKE/MAKA/REGISTRERAD PARTNER" => family.push(("spouse".into(), other)),
            other_kind => warnings.push(format!("unknown Relationstyp {other_kind:?} left out")),
        }
    }
    if !custody.is_empty() {
        custody.sort();
        p.push(
            "relations.parental-responsibility",
            relations(&custody),
            &[],
        );
    }
    if !family.is_empty() {
        family.sort();
        p.push("relations.family", relations(&family), &[]);
    }
    Ok(p)
}

fn own_scheme_is_coordination(p: &MappedPerson) -> bool {
    p.ids
        .iter()
        .find(|(_, _, active)| *active)
        .is_some_and(|(scheme, _, _)| scheme == "se-snr")
}

fn relations(list: &[(String, String)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(role, id)| json!({"role": role, "id": id}))
            .collect(),
    )
}

/// One change of an avisering file: the person as the file reports them.
#[derive(Debug, Clone)]
pub struct Notified {
    pub id: String,
    pub person: MappedPerson,
}

/// One avisering file (`AviseringPoster`, AviseringPost-1.2.xsd): every
/// person in it changed, and the file carries their whole post. The
/// sequence number is the file's (Filtransport names files by it).
/// The file carries the terms the customer ordered, with the same extended
/// permissions as its questions (`asked`).
pub fn map_avisering(
    xml: &str,
    asked: Asked,
    warnings: &mut Vec<String>,
) -> Result<Vec<Notified>, String> {
    let doc = soap::parse(xml, "avisering file")?;
    let root = doc.root_element();
    if root.tag_name().name() != "AviseringPoster" || root.tag_name().namespace() != Some(ns::POST)
    {
        return Err(format!(
            "expected AviseringPoster in {}, got {}{}",
            ns::POST,
            root.tag_name()
                .namespace()
                .map(|n| format!("{{{n}}}"))
                .unwrap_or_default(),
            root.tag_name().name()
        ));
    }
    let mut out = Vec::new();
    for post in children(root, ns::POST, "AviseringPost") {
        let person = map_post(post, None, asked, warnings)?;
        let id = person
            .ids
            .iter()
            .find(|(_, _, active)| *active)
            .or(person.ids.first())
            .map(|(_, v, _)| v.clone())
            .ok_or("an AviseringPost without an ID")?;
        out.push(Notified { id, person });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date("2024-03-01").as_deref(), Some("2024-03-01"));
        assert_eq!(date("20240301").as_deref(), Some("2024-03-01"));
        assert_eq!(date("2024-03-00"), None);
        assert_eq!(date("19800000"), None);
        assert_eq!(date("0000-00-00"), None);
        assert_eq!(date("2024"), None);
        assert_eq!(date("2024-3-1"), None);
    }

    #[test]
    fn call_names() {
        assert_eq!(call_name("Anna Maria", "10").as_deref(), Some("Anna"));
        assert_eq!(call_name("Anna Maria", "20").as_deref(), Some("Maria"));
        assert_eq!(
            call_name("Eva Lena Sofia", "12").as_deref(),
            Some("Eva-Lena")
        );
        assert_eq!(call_name("Anna", "30"), None);
    }

    #[test]
    fn request_follows_the_question_schema() {
        let r = request("201012152383", "handläggare <1>", &["Relationer"]);
        assert!(r.contains("{{secret:KundNrSlutkund}}"));
        assert!(r.contains(
            "<id:SlutAnvandarUtokadBehorighet>Relationer</id:SlutAnvandarUtokadBehorighet>"
        ));
        assert!(r.contains("handläggare &lt;1&gt;"));
        // The IdNummer of the question is person-1.2's (Sokparametrar-1.1
        // refers to person:IdNummer), and the identification is Ws-1.1.
        assert!(r.contains(&format!("xmlns:person=\"{}\"", ns::PERSON)));
        assert!(r.contains("<person:IdNummer>201012152383</person:IdNummer>"));
        assert!(r.contains(ns::IDENTIFICATION));
    }

    fn answer(content: &str) -> String {
        soap::envelope(&format!(
            "<s:SPARPersonsokningSvar xmlns:s=\"{}\" xmlns:u=\"{}\">{content}</s:SPARPersonsokningSvar>",
            UPSTREAM.ns_answer,
            ns::EXCEPTION
        ))
    }

    #[test]
    fn a_search_answer_is_hits_too_many_or_a_refusal() {
        let mut warnings = vec![];
        let too_many = answer(
            "<u:OverstigerMaxAntalSvarsposter><u:AntalPoster>140</u:AntalPoster>\
             <u:MaxAntalSvarsposter>100</u:MaxAntalSvarsposter></u:OverstigerMaxAntalSvarsposter>",
        );
        assert!(matches!(
            map_search(&too_many, Asked::default(), &mut warnings),
            Ok(Found::TooMany(Some(140)))
        ));
        let none = answer("");
        assert!(matches!(
            map_search(&none, Asked::default(), &mut warnings),
            Ok(Found::Hits(hits)) if hits.is_empty()
        ));
        let refused = answer(
            "<u:Undantag><u:Kod>3</u:Kod><u:Beskrivning>Felaktigt sökbegrepp PostNr</u:Beskrivning></u:Undantag>",
        );
        assert!(matches!(
            map_search(&refused, Asked::default(), &mut warnings),
            Ok(Found::Failed(ConnectorError::BadInput(m))) if m.contains("PostNr")
        ));
        // In a lookup, too many is still an error (an ID finds one person).
        assert!(matches!(
            map_answer(&too_many, "198001012384", Asked::default(), &mut warnings),
            Ok(Outcome::Failed(ConnectorError::BadInput(_)))
        ));
    }
}
