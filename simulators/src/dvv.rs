//! DVV (Finland): the VTJ query and the VTJ change interface.
//!
//! **VTJkysely** (SOAP 1.1, "SoSo", namespace `http://tempuri.org/`):
//! `POST /dvv/vtjkysely` with `TeeHenkilonTunnusKysely` carrying the message
//! product (`SoSoNimi`), `Kayttajatunnus`, `Salasana`, `Loppukayttaja` and
//! one `Henkilotunnus`. The answer is a `VTJHenkiloVastaussanoma`
//! (namespace `http://xml.vrk.fi/schema/vtjkysely`) with a `Paluukoodi`.
//! The message product decides what comes back:
//!
//! | product | content |
//! |---|---|
//! | `PERUSSANOMA 1` | identity, names, gender, mother tongue, citizenship, death, turvakielto; the address and home municipality **only without turvakielto** |
//! | `Perussanoma 3` | all of `PERUSSANOMA 1`, addresses also under turvakielto (an authority's permit), custodians (`Huoltaja`) and guardianship (`Edunvalvonta`) |
//! | `Huoltaja-Huollettavat` | identity, names and custodians |
//! | `OPHREK` | as Opetushallitus's product (OPHREK.xsd): every element present, empty when there is no value; the address **split** into `KatuS`, `Katunumero`, `Porraskirjain`, `Huoneistonumero` (zero-padded to three digits), `Jakokirjain`; call name, e-mail, custodians and guardianship |
//!
//! `Perussanoma 3` also carries the call name, the e-mail (`Sahkopostiosoite`),
//! a domestic postal address (`KotimainenPostiosoite`) and the civil status
//! (`Siviilisaaty`, inferred: see docs/simulators.md). The joined products
//! send the address elements empty when there is no address, as OPHREK
//! does; under turvakielto `PERUSSANOMA 1` leaves them out (censored).
//!
//! `Henkilo` names the active HETU with `voimassaolokoodi="1"` and any
//! corrected, passive ones with `voimassaolokoodi="0"` (the attribute is
//! VTJ's; listing passive HETUs this way is inferred).
//!
//! Return codes (`Paluukoodi@koodi`): `0000` found, `0001` not found,
//! `0002` the HETU is malformed, `0003` user or password refused, `0004`
//! the message product is not in the user's permit, `0005` no end user
//! (`Loppukayttaja`) given. DVV documents the codes per product; these are
//! the simulator's and the connector treats unknown ones as errors.
//!
//! **VTJ-muutosrajapinta** (REST/JSON; paths as DVV's clients use them):
//! `GET /dvv/api/v1/kirjausavain/{yyyy-MM-dd}` → `{"viimeisinKirjausavain"}`;
//! `POST /dvv/api/v1/muutokset {"viimeisinKirjausavain", "hetulista"}` →
//! up to 100 changes after the key for the listed persons, with
//! `ajanTasalla` true when no more follow. Basic auth (`MUTP-Tunnus`) and an
//! `X-Road-Client` header are required; under turvakielto the address
//! groups carry `turvakiellonAlaisetKentat` instead of values.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{NaiveDate, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::nordic::{FI_CITIZENSHIPS, FiPerson};
use crate::population::{Gender, Population};
use crate::xml::{el, envelope, esc};
use crate::{Fault, Shared, next_fault, soap_fault_response};

pub const NS_QUERY: &str = "http://tempuri.org/";
pub const NS_ANSWER: &str = "http://xml.vrk.fi/schema/vtjkysely";
pub const SOAP_ACTION: &str = "http://tempuri.org/TeeHenkilonTunnusKysely";
/// The VTJ user the simulator accepts, with the products in its permit.
pub const USER: &str = "folkhub-test";
pub const PASSWORD: &str = "vtj-simulator-password";
pub const PRODUCTS: &[&str] = &[
    "PERUSSANOMA 1",
    "Perussanoma 3",
    "Huoltaja-Huollettavat",
    "OPHREK",
];
/// The change interface's service user (Basic auth).
pub const MUTP_USER: &str = "folkhub-mutp";
pub const MUTP_PASSWORD: &str = "mutp-simulator-password";
pub const PAGE: usize = 100;
pub const MAX_HETUS: usize = 5000;

pub fn router() -> axum::Router<Shared> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dvv/vtjkysely", post(query))
        .route("/dvv/api/v1/kirjausavain/{date}", get(key_for_date))
        .route("/dvv/api/v1/muutokset", post(changes))
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "text/xml; charset=utf-8")], body).into_response()
}

/// A whole `TeeHenkilonTunnusKyselyResponse` envelope.
pub fn answer(
    product: &str,
    code: &str,
    text: &str,
    searched: &str,
    person: Option<String>,
) -> String {
    let now = Utc::now().format("%Y%m%d%H%M%S");
    envelope(&format!(
        "<TeeHenkilonTunnusKyselyResponse xmlns=\"{NS_QUERY}\"><TeeHenkilonTunnusKyselyResult>\
         <VTJHenkiloVastaussanoma xmlns=\"{NS_ANSWER}\" versio=\"1.0\" sanomatunnus=\"{}\" tietojenPoimintaaika=\"{now}\">\
         <Asiakasinfo><InfoS>Simulaattori</InfoS><InfoR>Simulator</InfoR><InfoE>Simulator</InfoE></Asiakasinfo>\
         <Paluukoodi koodi=\"{code}\">{}</Paluukoodi>\
         <Hakuperusteet><Henkilotunnus hakuperustePaluukoodi=\"{}\" hakuperusteTekstiE=\"{}\">{}</Henkilotunnus></Hakuperusteet>\
         {}</VTJHenkiloVastaussanoma></TeeHenkilonTunnusKyselyResult></TeeHenkilonTunnusKyselyResponse>",
        esc(product),
        esc(text),
        if person.is_some() { "1" } else { "0" },
        if person.is_some() {
            "Found"
        } else {
            "Not found"
        },
        esc(searched),
        person.unwrap_or_default(),
    ))
}

fn ymd(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

fn names_xml(p: &FiPerson) -> String {
    let calling = p.given.split(' ').next().unwrap_or_default();
    format!(
        "<NykyinenSukunimi>{}</NykyinenSukunimi><NykyisetEtunimet>{}</NykyisetEtunimet><NykyinenKutsumanimi>{}</NykyinenKutsumanimi>",
        el("Sukunimi", &p.family),
        el("Etunimet", &p.given),
        el("Kutsumanimi", calling),
    )
}

/// A synthetic e-mail address for some Finns (every third).
pub fn email(p: &FiPerson) -> Option<String> {
    (p.key.is_multiple_of(3) && p.death.is_none()).then(|| format!("fi{}@example.invalid", p.key))
}

/// A synthetic civil status code for adults (VTJ Siviilisaatykoodi).
pub fn civil_status_code(p: &FiPerson) -> Option<&'static str> {
    if p.is_minor() {
        return None;
    }
    Some(["1", "2", "2", "3", "4"][p.key % 5])
}

/// A synthetic domestic postal address for some Finns (every sixth with an
/// address): a PO box in the same post office.
pub fn postal_address(p: &FiPerson) -> Option<(String, String, &'static str)> {
    let a = p.address.as_ref().filter(|_| p.death.is_none())?;
    (p.key.is_multiple_of(6))
        .then(|| (format!("PL {}", 100 + p.key), a.postal_code.clone(), a.city))
}

/// `FiAddress::flat` (`B 12`) as OPHREK's parts: porraskirjain, and the
/// huoneistonumero zero-padded to three digits.
fn flat_parts(flat: Option<&str>) -> (String, String) {
    let Some(flat) = flat else {
        return (String::new(), String::new());
    };
    let (stair, number) = flat.split_once(' ').unwrap_or(("", flat));
    let number = number
        .parse::<u32>()
        .map(|n| format!("{n:03}"))
        .unwrap_or_default();
    (stair.to_string(), number)
}

/// The `Henkilo` element for a product.
pub fn henkilo(population: &Population, p: &FiPerson, product: &str) -> String {
    if product == "OPHREK" {
        return henkilo_ophrek(population, p);
    }
    let mut x = String::from("<Henkilo>");
    x.push_str(&format!(
        "<Henkilotunnus voimassaolokoodi=\"1\">{}</Henkilotunnus>",
        esc(p.id())
    ));
    // Corrected (passive) HETUs, `voimassaolokoodi` 0.
    for old in &p.ids[..p.ids.len() - 1] {
        x.push_str(&format!(
            "<Henkilotunnus voimassaolokoodi=\"0\">{}</Henkilotunnus>",
            esc(old)
        ));
    }
    x.push_str(&names_xml(p));
    if product == "Huoltaja-Huollettavat" {
        x.push_str(&custodians(population, p));
        x.push_str("</Henkilo>");
        return x;
    }
    let full = product == "Perussanoma 3";
    let address = p.address.as_ref().filter(|_| p.death.is_none());
    if full || !p.non_disclosure {
        match address {
            Some(a) => {
                x.push_str(&format!(
                    "<VakinainenKotimainenLahiosoite>{}{}{}{}{}{}</VakinainenKotimainenLahiosoite>",
                    el("LahiosoiteS", &a.line()),
                    el("LahiosoiteR", &a.line()),
                    el("Postinumero", &a.postal_code),
                    el("PostitoimipaikkaS", a.city),
                    el("PostitoimipaikkaR", a.city_sv),
                    el("AsuminenAlkupvm", &ymd(a.since)),
                ));
                x.push_str(&format!(
                    "<Kotikunta>{}{}{}</Kotikunta>",
                    el("Kuntanumero", a.municipality),
                    el("KuntaS", a.city),
                    el("KuntaR", a.city_sv),
                ));
            }
            None => x.push_str("<VakinainenKotimainenLahiosoite/><Kotikunta/>"),
        }
    }
    if full {
        match postal_address(p) {
            Some((line, code, city)) => x.push_str(&format!(
                "<KotimainenPostiosoite>{}{}{}</KotimainenPostiosoite>",
                el("PostiosoiteS", &line),
                el("Postinumero", &code),
                el("PostitoimipaikkaS", city),
            )),
            None => x.push_str("<KotimainenPostiosoite/>"),
        }
    }
    x.push_str(&format!(
        "<Turvakielto>{}</Turvakielto>",
        el("TurvakieltoTieto", if p.non_disclosure { "1" } else { "0" })
    ));
    if let Some(d) = p.death {
        x.push_str(&format!(
            "<Kuolintiedot>{}{}</Kuolintiedot>",
            el("Kuollut", "1"),
            el("Kuolinpvm", &ymd(d))
        ));
    }
    x.push_str(&format!(
        "<Aidinkieli>{}{}</Aidinkieli>",
        el("Kielikoodi", p.language),
        el("KieliS", p.language)
    ));
    let (code, text) = match p.gender {
        Gender::Male => ("1", "Mies"),
        Gender::Female => ("2", "Nainen"),
    };
    x.push_str(&format!(
        "<Sukupuoli>{}{}</Sukupuoli>",
        el("Sukupuolikoodi", code),
        el("SukupuoliS", text)
    ));
    x.push_str(&citizenships(p));
    if full {
        x.push_str(&custodians(population, p));
        x.push_str(&trustee(population, p));
        x.push_str(&el("Sahkopostiosoite", &email(p).unwrap_or_default()));
        match civil_status_code(p) {
            Some(code) => x.push_str(&format!(
                "<Siviilisaaty>{}</Siviilisaaty>",
                el("Siviilisaatykoodi", code)
            )),
            None => x.push_str("<Siviilisaaty/>"),
        }
    }
    x.push_str("</Henkilo>");
    x
}

/// One `Kansalaisuus` per citizenship, with VTJ's numeric country code.
fn citizenships(p: &FiPerson) -> String {
    p.citizenship
        .iter()
        .map(|c| {
            let numeric = FI_CITIZENSHIPS
                .iter()
                .find(|(_, a)| a == c)
                .map_or("998", |(n, _)| n);
            format!(
                "<Kansalaisuus>{}{}</Kansalaisuus>",
                el("Kansalaisuuskoodi3", numeric),
                el("KansalaisuusS", c)
            )
        })
        .collect()
}

fn trustee(population: &Population, p: &FiPerson) -> String {
    match p.trustee.filter(|_| p.death.is_none()) {
        Some(t) => {
            let trustee = &population.finns[t];
            format!(
                "<Edunvalvonta>{}{}<HenkiloEdunvalvoja>{}{}</HenkiloEdunvalvoja></Edunvalvonta>",
                el("Alkupvm", "20200101"),
                el("Tehtavienjakokoodi", "1"),
                el("Henkilotunnus", trustee.id()),
                names_xml_plain(trustee),
            )
        }
        None => "<Edunvalvonta/>".into(),
    }
}

fn names_xml_plain(p: &FiPerson) -> String {
    format!(
        "<NykyinenSukunimi>{}</NykyinenSukunimi><NykyisetEtunimet>{}</NykyisetEtunimet>",
        el("Sukunimi", &p.family),
        el("Etunimet", &p.given),
    )
}

/// The `Henkilo` of Opetushallitus's product, element by element as
/// OPHREK.xsd lists them: every element is present (empty when there is
/// no value), and the street address comes split into its parts.
fn henkilo_ophrek(population: &Population, p: &FiPerson) -> String {
    let mut x = String::from("<Henkilo>");
    x.push_str(&format!(
        "<Henkilotunnus voimassaolokoodi=\"1\">{}</Henkilotunnus>",
        esc(p.id())
    ));
    let (code, fi, sv) = match p.gender {
        Gender::Male => ("1", "Mies", "Man"),
        Gender::Female => ("2", "Nainen", "Kvinna"),
    };
    x.push_str(&format!(
        "<Sukupuoli>{}{}{}</Sukupuoli>",
        el("Sukupuolikoodi", code),
        el("SukupuoliS", fi),
        el("SukupuoliR", sv)
    ));
    x.push_str(&format!(
        "<Aidinkieli>{}{}{}{}</Aidinkieli>",
        el("Kielikoodi", p.language),
        el("KieliS", p.language),
        el("KieliR", p.language),
        el("KieliSelvakielinen", "")
    ));
    x.push_str(&format!(
        "<Kuolintiedot>{}</Kuolintiedot>",
        el("Kuolinpvm", &p.death.map(ymd).unwrap_or_default())
    ));
    x.push_str(&names_xml(p));
    let address = p
        .address
        .as_ref()
        .filter(|_| p.death.is_none() && !p.non_disclosure);
    let (stair, flat) = flat_parts(address.and_then(|a| a.flat.as_deref()));
    let part = |f: &dyn Fn(&crate::nordic::FiAddress) -> String| address.map(f).unwrap_or_default();
    x.push_str(&format!(
        "<VakinainenKotimainenOsoite>{}{}{}{}{}{}{}{}{}{}{}{}</VakinainenKotimainenOsoite>",
        el("ParasOsoiteTieto", ""),
        el("KatuS", &part(&|a| a.street.clone())),
        el("KatuR", &part(&|a| a.street.clone())),
        el("Katunumero", &part(&|a| a.number.to_string())),
        el("Porraskirjain", &stair),
        el("Huoneistonumero", &flat),
        el("Jakokirjain", ""),
        el("Postinumero", &part(&|a| a.postal_code.clone())),
        el("PostitoimipaikkaS", &part(&|a| a.city.to_string())),
        el("PostitoimipaikkaR", &part(&|a| a.city_sv.to_string())),
        el("AsuminenAlkupvm", &part(&|a| ymd(a.since))),
        el("AsuminenLoppupvm", ""),
    ));
    x.push_str(&format!(
        "<Kotikunta>{}{}{}{}</Kotikunta>",
        el("Kuntanumero", &part(&|a| a.municipality.to_string())),
        el("KuntaS", &part(&|a| a.city.to_string())),
        el("KuntaR", &part(&|a| a.city_sv.to_string())),
        el("KuntasuhdeAlkupvm", &part(&|a| ymd(a.since))),
    ));
    x.push_str(&format!(
        "<Turvakielto>{}{}</Turvakielto>",
        el("TurvakieltoTieto", if p.non_disclosure { "1" } else { "0" }),
        el("TurvakieltoPaattymispvm", "")
    ));
    x.push_str(&custodians(population, p));
    x.push_str(&trustee(population, p));
    x.push_str(&el("Sahkopostiosoite", &email(p).unwrap_or_default()));
    x.push_str(&citizenships(p));
    x.push_str("</Henkilo>");
    x
}

/// `HuoltajaLkm` (0 when there is no living custodian, so the answer says
/// so) and one `Huoltaja` each, in OPHREK.xsd's order.
fn custodians(population: &Population, p: &FiPerson) -> String {
    let living: Vec<&FiPerson> = p
        .guardians
        .iter()
        .map(|g| &population.finns[*g])
        .filter(|g| g.death.is_none() && p.death.is_none())
        .collect();
    let mut x = el("HuoltajaLkm", &living.len().to_string());
    for g in living {
        x.push_str(&format!(
            "<Huoltaja>{}{}<Huoltotiedot>{}</Huoltotiedot>{}</Huoltaja>",
            el("Henkilotunnus", g.id()),
            el("Syntymaaika", &ymd(g.birth)),
            el("Henkilosuhdelajikoodi", "1"),
            names_xml_plain(g),
        ));
    }
    x
}

async fn query(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    shared.count_request();
    if let Some(r) = soap_fault_response(&shared).await {
        return r;
    }
    let action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"');
    if action != SOAP_ACTION {
        return xml_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::xml::soap_fault(
                "soap:Client",
                &format!("Unknown SOAPAction {action:?}; expected {SOAP_ACTION}"),
            ),
        );
    }
    let Ok(doc) = roxmltree::Document::parse(&body) else {
        return xml_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::xml::soap_fault("soap:Client", "The request is not well-formed XML"),
        );
    };
    let Some(request) = crate::xml::soap_body(&doc).filter(|n| {
        n.tag_name().name() == "TeeHenkilonTunnusKysely"
            && n.tag_name().namespace() == Some(NS_QUERY)
    }) else {
        return xml_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::xml::soap_fault(
                "soap:Client",
                "Expected a SOAP 1.1 envelope with TeeHenkilonTunnusKysely in http://tempuri.org/",
            ),
        );
    };
    let get = |name: &str| crate::xml::child_text(request, NS_QUERY, name).unwrap_or_default();
    let product = get("SoSoNimi");
    let hetu = get("Henkilotunnus").to_uppercase();
    let reply = |code: &str, text: &str| {
        xml_response(StatusCode::OK, answer(product, code, text, &hetu, None))
    };
    if get("Kayttajatunnus") != USER || get("Salasana") != PASSWORD {
        return reply("0003", "Käyttäjätunnus tai salasana virheellinen");
    }
    if !PRODUCTS.contains(&product) {
        return reply("0004", "Sanomatuote ei ole käyttöluvassa");
    }
    if get("Loppukayttaja").is_empty() {
        return reply("0005", "Loppukäyttäjä puuttuu");
    }
    if folkhub_core::ids::parse_finnish(&hetu).is_err() {
        return reply("0002", "Henkilötunnus virheellinen");
    }
    let population = shared.population.read().await;
    match population.find_finn(&hetu) {
        Some(p) => xml_response(
            StatusCode::OK,
            answer(
                product,
                "0000",
                "Haku onnistui",
                &hetu,
                Some(henkilo(&population, p, product)),
            ),
        ),
        None => reply("0001", "Henkilöä ei löytynyt"),
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"status": status.as_u16(), "virhe": message})),
    )
        .into_response()
}

async fn check_mutp(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    shared.count_request();
    if let Some(fault) = next_fault(shared) {
        return Err(Box::new(match fault {
            Fault::Slow { ms } => {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                return check_headers(headers);
            }
            Fault::RateLimited { retry_after_ms } => (
                StatusCode::TOO_MANY_REQUESTS,
                [(
                    "retry-after",
                    retry_after_ms.div_ceil(1000).max(1).to_string(),
                )],
                Json(json!({"status": 429, "virhe": "Liian monta pyyntöä"})),
            )
                .into_response(),
            Fault::Status { status } => json_error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "Palvelinvirhe (simuloitu)",
            ),
            Fault::Truncated => (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{\"viimeisinKirjausavain\":12,\"muutok",
            )
                .into_response(),
            Fault::Html => (
                StatusCode::BAD_GATEWAY,
                [("content-type", "text/html")],
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response(),
            Fault::Gone => json_error(StatusCode::GONE, "Rajapintaversio on poistettu käytöstä"),
        }));
    }
    check_headers(headers)
}

/// The change interface's own checks after any fault.
fn check_headers(headers: &HeaderMap) -> Result<(), Box<Response>> {
    if headers.get("x-road-client").is_none() {
        return Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "X-Road-Client header missing",
        )));
    }
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{MUTP_USER}:{MUTP_PASSWORD}"));
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if given != Some(expected.as_str()) {
        return Err(Box::new(json_error(
            StatusCode::UNAUTHORIZED,
            "Tunnistautuminen epäonnistui",
        )));
    }
    Ok(())
}

async fn key_for_date(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(date): Path<String>,
) -> Response {
    if let Err(r) = check_mutp(&shared, &headers).await {
        return *r;
    }
    let Ok(date) = NaiveDate::parse_from_str(&date, "%Y-%m-%d") else {
        return json_error(StatusCode::BAD_REQUEST, "päivämäärä muodossa yyyy-MM-dd");
    };
    let population = shared.population.read().await;
    Json(json!({"viimeisinKirjausavain": population.dvv_key_at(date)})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangesRequest {
    viimeisin_kirjausavain: u64,
    hetulista: Vec<String>,
}

fn date_value(d: NaiveDate) -> Value {
    json!({"arvo": d.to_string(), "tarkkuus": "PAIVA"})
}

fn group(p: &FiPerson, name: &str, previous: &str) -> Value {
    let mut g = json!({"tietoryhma": name, "muutosattribuutti": "MUUTETTU"});
    match name {
        "HENKILON_NIMI" | "NIMENMUUTOS" => {
            g["etunimi"] = json!(p.given);
            g["sukunimi"] = json!(p.family);
        }
        "TURVAKIELTO" => {
            g["turvakieltoAktiivinen"] = json!(p.non_disclosure);
        }
        "KUOLINPAIVA" => {
            g["muutosattribuutti"] = json!("LISATTY");
            g["kuollut"] = json!(p.death.is_some());
            if let Some(d) = p.death {
                g["kuolinpv"] = date_value(d);
            }
        }
        "HENKILOTUNNUS_KORJAUS" => {
            g["aktiivinenHenkilotunnus"] = json!(p.id());
            g["edellisetHenkilotunnukset"] = json!([previous]);
        }
        "VAKINAINEN_KOTIMAINEN_OSOITE" | "KOTIKUNTA" if p.non_disclosure => {
            let fields: &[&str] = if name == "KOTIKUNTA" {
                &["kuntakoodi"]
            } else {
                &[
                    "katunimi",
                    "katunumero",
                    "huoneistonumero",
                    "postinumero",
                    "postitoimipaikka",
                ]
            };
            g["turvakiellonAlaisetKentat"] = json!(fields);
        }
        "VAKINAINEN_KOTIMAINEN_OSOITE" => {
            if let Some(a) = &p.address {
                g["katunimi"] = json!({"fi": a.street, "sv": a.street});
                g["katunumero"] = json!(a.number.to_string());
                if let Some(f) = &a.flat {
                    g["huoneistonumero"] = json!(f);
                }
                g["postinumero"] = json!(a.postal_code);
                g["postitoimipaikka"] = json!({"fi": a.city, "sv": a.city_sv});
                g["alkupv"] = date_value(a.since);
            }
        }
        "KOTIKUNTA" => {
            if let Some(a) = &p.address {
                g["kuntakoodi"] = json!(a.municipality);
            }
        }
        _ => {}
    }
    g
}

async fn changes(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = check_mutp(&shared, &headers).await {
        return *r;
    }
    let request: ChangesRequest = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("pyyntö ei ole kelvollinen: {e}"),
            );
        }
    };
    if request.hetulista.is_empty() || request.hetulista.len() > MAX_HETUS {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("hetulista: 1–{MAX_HETUS} henkilötunnusta"),
        );
    }
    let population = shared.population.read().await;
    let wanted: std::collections::HashSet<usize> = request
        .hetulista
        .iter()
        .filter_map(|h| population.find_finn(&h.to_uppercase()).map(|p| p.key))
        .collect();
    let mut out = Vec::new();
    let mut last = request.viimeisin_kirjausavain;
    let mut up_to_date = true;
    for entry in population
        .dvv_log
        .iter()
        .filter(|e| e.key > request.viimeisin_kirjausavain)
    {
        if out.len() == PAGE {
            up_to_date = false;
            break;
        }
        last = entry.key;
        if !wanted.contains(&entry.person) {
            continue;
        }
        let p = &population.finns[entry.person];
        let groups: Vec<Value> = entry
            .groups
            .iter()
            .map(|g| group(p, g, &entry.hetu))
            .collect();
        out.push(json!({
            "henkilotunnus": entry.hetu,
            "muutospv": entry.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            "tietoryhmat": groups,
        }));
    }
    Json(json!({
        "viimeisinKirjausavain": last,
        "ajanTasalla": up_to_date,
        "muutokset": out,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    /// Every answer of every product, found or not, holds to the element
    /// table written from OPHREK.xsd and the products' published shapes.
    #[test]
    fn every_answer_of_every_product_holds_to_the_published_schema() {
        let population = Population::generate(7, 2000);
        let table = wire::table("vtj-kysely").unwrap_or_else(|e| panic!("{e}"));
        assert!(population.finns.iter().any(|p| p.non_disclosure));
        assert!(population.finns.iter().any(|p| p.death.is_some()));
        assert!(
            population
                .finns
                .iter()
                .any(|p| p.address.as_ref().is_some_and(|a| a.flat.is_some()))
        );
        for product in PRODUCTS {
            for p in &population.finns {
                let xml = answer(
                    product,
                    "0000",
                    "Haku onnistui",
                    p.id(),
                    Some(henkilo(&population, p, product)),
                );
                if let Err(problems) = table.check_xml(&xml) {
                    panic!(
                        "{product} {}: {:?}\n{xml}",
                        p.id(),
                        &problems[..problems.len().min(5)]
                    );
                }
            }
            for (code, text) in [
                ("0001", "Henkilöä ei löytynyt"),
                ("0002", "Henkilötunnus virheellinen"),
                ("0003", "Käyttäjätunnus tai salasana virheellinen"),
            ] {
                let xml = answer(product, code, text, "010101-123N", None);
                assert!(table.check_xml(&xml).is_ok(), "{:?}", table.check_xml(&xml));
            }
        }
    }

    #[test]
    fn ophrek_splits_the_address_and_pads_the_flat() {
        assert_eq!(flat_parts(Some("B 7")), ("B".into(), "007".into()));
        assert_eq!(flat_parts(None), (String::new(), String::new()));
        let population = Population::generate(7, 2000);
        let p = population
            .finns
            .iter()
            .find(|p| {
                !p.non_disclosure
                    && p.death.is_none()
                    && p.address.as_ref().is_some_and(|a| a.flat.is_some())
            })
            .expect("a Finn with a flat");
        let xml = henkilo(&population, p, "OPHREK");
        assert!(
            xml.contains("<KatuS>") && !xml.contains("LahiosoiteS"),
            "{xml}"
        );
        assert!(xml.contains("<Huoneistonumero>0"), "{xml}");
    }
}
