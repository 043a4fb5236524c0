//! The field catalogue: every path a merged person record can hold, what it
//! means, the shape of its JSON value, its group (for survivorship rules and
//! legal basis) and which registers provide it. `docs/fields.md` is written
//! from this table; a test keeps them in step.

/// The JSON shape of a field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON string.
    Text,
    /// A JSON string `YYYY-MM-DD`.
    Date,
    /// A JSON string from a code list; unknown codes are kept as sent.
    Code,
    /// A JSON array of strings.
    TextList,
    /// An address object (see docs/fields.md).
    Address,
    /// An array of relation objects `{ "role", "id" }`.
    Relations,
    /// A JSON boolean.
    Flag,
    /// A point `{ "lat", "lon", "epsg" }`.
    Point,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Date => "date",
            Kind::Code => "code",
            Kind::TextList => "list of text",
            Kind::Address => "address",
            Kind::Relations => "relations",
            Kind::Flag => "flag",
            Kind::Point => "point",
        }
    }
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub path: &'static str,
    pub group: &'static str,
    pub kind: Kind,
    pub meaning: &'static str,
    /// Connector ids that provide it.
    pub sources: &'static [&'static str],
    /// True when protection labels of the person (address protection) apply to it.
    pub location: bool,
}

macro_rules! field {
    ($path:literal, $group:literal, $kind:ident, $location:literal, [$($source:literal),*], $meaning:literal) => {
        FieldDef { path: $path, group: $group, kind: Kind::$kind, meaning: $meaning, sources: &[$($source),*], location: $location }
    };
}

/// The catalogue, in documentation order.
pub const CATALOGUE: &[FieldDef] = &[
    field!(
        "name.given",
        "name",
        Text,
        false,
        ["folkeregister", "spar", "dvv"],
        "Given name(s) as registered (FREG fornavn, SPAR Fornamn, VTJ etunimet)."
    ),
    field!(
        "name.call",
        "name",
        Text,
        false,
        ["spar", "dvv"],
        "The given name the person is called by (SPAR Tilltalsnamn, which names one or two of the given names; VTJ kutsumanimi)."
    ),
    field!(
        "name.middle",
        "name",
        Text,
        false,
        ["folkeregister", "spar"],
        "Middle name (FREG mellomnavn, SPAR Mellannamn)."
    ),
    field!(
        "name.family",
        "name",
        Text,
        false,
        ["folkeregister", "spar", "dvv"],
        "Family name (FREG etternavn, SPAR Efternamn, VTJ sukunimi)."
    ),
    field!(
        "birth.date",
        "birth",
        Date,
        false,
        ["folkeregister", "spar", "dvv"],
        "Date of birth."
    ),
    field!(
        "birth.country",
        "birth",
        Code,
        false,
        ["folkeregister"],
        "Country of birth, ISO 3166 alpha-3 as the register gives it."
    ),
    field!(
        "gender",
        "birth",
        Code,
        false,
        ["folkeregister", "spar", "dvv"],
        "`female` or `male` as registered."
    ),
    field!(
        "status",
        "status",
        Code,
        false,
        ["folkeregister", "spar", "dvv"],
        "Registration status: `resident`, `emigrated`, `deceased`, `missing`, `ceased`, `inactive`, `not-resident`, `birth-registered`, `temporary`, `active`; unknown register codes are kept as sent."
    ),
    field!(
        "death.date",
        "status",
        Date,
        false,
        ["folkeregister", "spar", "dvv"],
        "Date of death."
    ),
    field!(
        "civil-status",
        "family",
        Code,
        false,
        ["folkeregister", "dvv"],
        "Civil status: `unknown`, `unmarried`, `married`, `widowed`, `divorced`, `separated`, `registered-partner`, `separated-partner`, `divorced-partner`, `surviving-partner`; unknown codes kept as sent. SPAR PersonSök carries no civil status (its 2021.1 XSDs have no such element; Navet does, for authorities only)."
    ),
    field!(
        "citizenship",
        "citizenship",
        TextList,
        false,
        ["folkeregister", "spar", "dvv"],
        "Citizenships, ISO 3166 alpha-3, sorted."
    ),
    field!(
        "address.residential",
        "address",
        Address,
        true,
        ["folkeregister", "spar", "dvv"],
        "Registered home address (FREG bostedsadresse, SPAR Folkbokforingsadress, VTJ vakinainen osoite)."
    ),
    field!(
        "address.temporary",
        "address",
        Address,
        true,
        ["folkeregister", "dvv"],
        "Temporary address (FREG oppholdsadresse, VTJ tilapäinen osoite)."
    ),
    field!(
        "address.shared-residence",
        "address",
        Address,
        true,
        ["folkeregister"],
        "A child's second home under an agreement on shared residence (FREG deltBosted), with its period."
    ),
    field!(
        "address.postal",
        "address",
        Address,
        true,
        ["folkeregister", "spar", "dvv"],
        "Postal address when it differs from the home address (FREG postadresse, SPAR SarskildPostadress, VTJ kotimainen postiosoite)."
    ),
    field!(
        "address.municipality",
        "address",
        Code,
        true,
        ["folkeregister", "spar", "dvv"],
        "Municipality number of the home address (NO kommunenummer, SE kommunkod, FI kotikunta)."
    ),
    field!(
        "address.statistical-unit",
        "address",
        Code,
        true,
        ["folkeregister"],
        "NO grunnkrets (8 digits: kommunenummer + 4)."
    ),
    field!(
        "address.district",
        "district",
        Code,
        true,
        ["kartverket"],
        "City district code (SSB Klass 103, e.g. 030101 Gamle Oslo), for Oslo, Bergen, Trondheim and Stavanger."
    ),
    field!(
        "address.se-district",
        "address",
        Code,
        true,
        ["spar"],
        "SE distrikt of the registration (SPAR DistriktKod, six digits), the area registration and statistics use since 2016."
    ),
    field!(
        "address.coordinates",
        "district",
        Point,
        true,
        ["kartverket"],
        "Representation point of the home address (Kartverket representasjonspunkt): `{\"lat\", \"lon\", \"epsg\"}`."
    ),
    field!(
        "protection.level",
        "protection",
        Code,
        false,
        ["folkeregister"],
        "NO address protection: `UGRADERT`, `KLIENTADRESSE`, `FORTROLIG`, `STRENGT_FORTROLIG`, `STRENGT_FORTROLIG_UTLAND`."
    ),
    field!(
        "protection.se-secrecy",
        "protection",
        Flag,
        false,
        ["spar"],
        "SE sekretessmarkering."
    ),
    field!(
        "protection.se-protected-registration",
        "protection",
        Flag,
        false,
        ["spar"],
        "SE skyddad folkbokföring."
    ),
    field!(
        "protection.fi-non-disclosure",
        "protection",
        Flag,
        false,
        ["dvv"],
        "FI turvakielto."
    ),
    field!(
        "relations.family",
        "relations",
        Relations,
        false,
        ["folkeregister", "spar"],
        "Family relations: role `mother`, `father`, `co-mother`, `child`, `spouse`, `sibling` (FREG familierelasjon). Sorted by role, then id."
    ),
    field!(
        "relations.parental-responsibility",
        "relations",
        Relations,
        false,
        ["folkeregister", "spar", "dvv"],
        "Who has parental responsibility for this person: role `joint`, `mother`, `father`, `co-mother`, `other`, `unknown`, with the guardian's id."
    ),
    field!(
        "relations.guardianship",
        "relations",
        Relations,
        false,
        ["folkeregister", "dvv"],
        "Guardianship (vergemål, edunvalvonta): the guardian's id with role = the scope."
    ),
    field!(
        "language.sami",
        "language",
        TextList,
        false,
        ["folkeregister"],
        "Sami languages the person uses with public bodies (FREG brukAvSamiskSpraak)."
    ),
    field!(
        "language.preferred",
        "contact",
        Code,
        false,
        ["krr", "dvv"],
        "Preferred language (KRR spraak, VTJ äidinkieli)."
    ),
    field!(
        "contact.email",
        "contact",
        Text,
        false,
        ["krr", "dvv"],
        "E-mail address (KRR epostadresse; VTJ sahkopostiosoite in the products that carry it)."
    ),
    field!(
        "contact.mobile",
        "contact",
        Text,
        false,
        ["krr"],
        "Mobile phone number in KRR."
    ),
    field!(
        "contact.reservation",
        "contact",
        Flag,
        false,
        ["krr"],
        "True when the person has reserved against digital communication."
    ),
    field!(
        "contact.notification-status",
        "contact",
        Code,
        false,
        ["krr"],
        "KRR varslingsstatus: `can-notify`, `cannot-notify`."
    ),
    field!(
        "contact.digital-mailbox",
        "contact",
        Text,
        false,
        ["krr"],
        "Digital mailbox address (KRR digital_post)."
    ),
    field!(
        "contact.digital-mailbox-provider",
        "contact",
        Code,
        false,
        ["krr"],
        "Organisation number of the digital mailbox provider (KRR digital_post.postkasseleverandoeradresse)."
    ),
];

/// Looks a path up in the catalogue.
pub fn lookup(path: &str) -> Option<&'static FieldDef> {
    CATALOGUE.iter().find(|f| f.path == path)
}

/// The group of a path; unknown paths (a connector minor newer than this
/// host's catalogue) fall in the group named by their first segment.
pub fn group_of(path: &str) -> &str {
    lookup(path).map_or_else(|| path.split('.').next().unwrap_or(path), |f| f.group)
}

/// Renders docs/fields.md.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Field catalogue\n\nEvery value in a merged person record is keyed by one of these paths. \
Connectors send values as JSON in the shape given by *kind*. This file is generated from \
`host/core/src/fields.rs` (`cargo xtask docs`); a test fails when they differ.\n\n\
| path | group | kind | location | sources | meaning |\n|---|---|---|---|---|---|\n",
    );
    for f in CATALOGUE {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            f.path,
            f.group,
            f.kind.as_str(),
            if f.location { "yes" } else { "" },
            f.sources.join(", "),
            f.meaning
        ));
    }
    out.push_str(
        "\n## Address objects\n\n```json\n{\"kind\": \"street\", \"street\": \"Testveien\", \"house_number\": \"12\", \"house_letter\": \"B\",\n \"unit\": \"H0101\", \"postal_code\": \"0561\", \"city\": \"OSLO\", \"municipality\": \"0301\", \"country\": \"NOR\"}\n```\n\n\
`kind` is `street` (vegadresse), `cadastral` (matrikkeladresse: `farm`, `holding`, `lease` instead of street parts), \
`unknown` (ukjent bosted: only `municipality`), `postal` (an address as delivery lines, as SPAR and VTJ give it: `care_of`, `lines`, `postal_code`, `city`, `municipality`, `country`) or `foreign` (`lines`, `country`). Keys without a value are left out.\n\n\
## Relation objects\n\n`{\"role\": \"mother\", \"id\": \"03851598730\"}`; the id is the related person's current ID as the register gives it.\n\n\
## Location fields\n\nFields marked *location* carry the person's address protection label. A reader without the legal basis \
for a label does not see them; for `STRENGT_FORTROLIG` the register itself sends none of them.\n",
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_grouped() {
        let mut seen = std::collections::HashSet::new();
        for f in CATALOGUE {
            assert!(seen.insert(f.path), "duplicate {}", f.path);
            assert!(!f.group.is_empty() && !f.meaning.is_empty(), "{}", f.path);
        }
        assert_eq!(group_of("contact.email"), "contact");
        assert_eq!(group_of("future.thing"), "future");
    }
}
