//! Swedes (SPAR) and Finns (DVV) of the synthetic population, and the
//! persons known in two countries.
//!
//! They are drawn from their own seeded generators, so adding them left the
//! Norwegian part of the population as it was. Some Norwegians moved to
//! Sweden or Finland (Folkeregisteret: emigrated, with the foreign ID as
//! `utenlandskPersonidentifikasjon`; SPAR/DVV: resident there), and some
//! Swedes moved to Norway (SPAR: deregistered `UV`; Folkeregisteret:
//! resident). IDs change: samordningsnummer → personnummer in Sweden,
//! corrected HETU in Finland.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use folkhub_core::ids;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::population::{Gender, Population, Status, epoch, today};

/// A Swedish folkbokföringsadress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeAddress {
    pub care_of: Option<String>,
    /// Utdelningsadress2 (street, number and flat), as SPAR sends it.
    pub line: String,
    pub postal_code: String,
    pub city: &'static str,
    /// Län (2 digits).
    pub county: &'static str,
    /// Kommun within the län (2 digits); kommunkod = county + this.
    pub municipality: &'static str,
    pub since: NaiveDate,
}

impl SeAddress {
    pub fn municipality_code(&self) -> String {
        format!("{}{}", self.county, self.municipality)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SePerson {
    pub key: usize,
    /// 12-digit IDs, oldest first; the last is in use.
    pub ids: Vec<String>,
    pub given: String,
    pub middle: Option<String>,
    pub family: String,
    pub birth: NaiveDate,
    pub gender: Gender,
    pub citizen: bool,
    /// None for samordningsnummer holders (not folkbokförda) and the deregistered.
    pub address: Option<SeAddress>,
    /// Sekretessmarkering since.
    pub secrecy: Option<NaiveDate>,
    /// Skyddad folkbokföring since (SPAR then also sets sekretessmarkering).
    pub protected: Option<NaiveDate>,
    /// Avregistreringsorsak (`AV` avliden, `UV` utvandrad) and date.
    pub deregistered: Option<(&'static str, NaiveDate)>,
    /// Vårdnadshavare (keys in `swedes`).
    pub guardians: Vec<usize>,
    pub spouse: Option<usize>,
    /// The same person in Folkeregisteret, when known there.
    pub norwegian: Option<usize>,
    pub updated: DateTime<Utc>,
}

impl SePerson {
    pub fn id(&self) -> &str {
        self.ids.last().map(String::as_str).unwrap_or_default()
    }
    pub fn is_coordination(&self) -> bool {
        ids::parse_swedish(self.id()).is_ok_and(|p| p.scheme == ids::IdScheme::SeSnr)
    }
    pub fn is_minor(&self) -> bool {
        age(self.birth) < 18
    }
    /// SPAR withholds name and address of persons with either marker.
    pub fn is_protected(&self) -> bool {
        self.secrecy.is_some() || self.protected.is_some()
    }
    pub fn status(&self) -> &'static str {
        match self.deregistered {
            Some(("AV", _)) => "deceased",
            Some(("UV", _)) => "emigrated",
            Some(_) => "ceased",
            None if self.is_coordination() => "not-resident",
            None => "resident",
        }
    }
}

/// A Finnish vakinainen kotimainen osoite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiAddress {
    pub street: String,
    pub number: u32,
    /// Porraskirjain and huoneistonumero, e.g. `B 12`.
    pub flat: Option<String>,
    pub postal_code: String,
    pub city: &'static str,
    pub city_sv: &'static str,
    pub municipality: &'static str,
    pub since: NaiveDate,
}

impl FiAddress {
    pub fn line(&self) -> String {
        match &self.flat {
            Some(f) => format!("{} {} {f}", self.street, self.number),
            None => format!("{} {}", self.street, self.number),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FiPerson {
    pub key: usize,
    /// HETUs, oldest first; the last is in use (earlier ones were corrected).
    pub ids: Vec<String>,
    /// Etunimet, space separated.
    pub given: String,
    pub family: String,
    pub birth: NaiveDate,
    pub gender: Gender,
    /// Äidinkieli, ISO 639-1.
    pub language: &'static str,
    /// ISO 3166 alpha-3, sorted.
    pub citizenship: Vec<&'static str>,
    pub address: Option<FiAddress>,
    pub non_disclosure: bool,
    pub death: Option<NaiveDate>,
    /// Huoltajat (keys in `finns`).
    pub guardians: Vec<usize>,
    /// Edunvalvoja (key in `finns`).
    pub trustee: Option<usize>,
    pub norwegian: Option<usize>,
    pub updated: DateTime<Utc>,
}

impl FiPerson {
    pub fn id(&self) -> &str {
        self.ids.last().map(String::as_str).unwrap_or_default()
    }
    pub fn is_minor(&self) -> bool {
        age(self.birth) < 18
    }
}

/// One SPAR avisering file: a sequence-numbered delivery of the persons
/// whose data changed (the first is a nulägesavisering of everyone).
#[derive(Debug, Clone, Serialize)]
pub struct SparFile {
    pub number: u64,
    pub kind: &'static str,
    pub persons: Vec<usize>,
    pub created: DateTime<Utc>,
}

/// One entry of DVV's change log (`kirjausavain` = its key).
#[derive(Debug, Clone, Serialize)]
pub struct DvvEntry {
    pub key: u64,
    pub person: usize,
    /// The HETU the change was recorded under (the old one for a correction).
    pub hetu: String,
    pub groups: Vec<&'static str>,
    pub at: DateTime<Utc>,
}

fn age(birth: NaiveDate) -> i32 {
    let t = today();
    let mut years = t.year() - birth.year();
    if (t.month(), t.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

struct SeKommun {
    county: &'static str,
    municipality: &'static str,
    city: &'static str,
    postal: u32,
}

const SE_KOMMUNER: &[SeKommun] = &[
    SeKommun {
        county: "01",
        municipality: "80",
        city: "STOCKHOLM",
        postal: 11_120,
    },
    SeKommun {
        county: "14",
        municipality: "80",
        city: "GÖTEBORG",
        postal: 41_101,
    },
    SeKommun {
        county: "12",
        municipality: "80",
        city: "MALMÖ",
        postal: 21_115,
    },
    SeKommun {
        county: "03",
        municipality: "80",
        city: "UPPSALA",
        postal: 75_220,
    },
    SeKommun {
        county: "24",
        municipality: "80",
        city: "UMEÅ",
        postal: 90_325,
    },
];

const SE_GIVEN_F: &[&str] = &["Anna", "Maria", "Karin", "Sara", "Elin", "Ebba", "Astrid"];
const SE_GIVEN_M: &[&str] = &["Erik", "Lars", "Karl", "Johan", "Oskar", "Nils", "Axel"];
const SE_FAMILY: &[&str] = &[
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Eriksson",
    "Larsson",
    "Lindqvist",
    "Bergström",
];
const SE_STREETS: &[&str] = &[
    "Storgatan",
    "Kungsgatan",
    "Drottninggatan",
    "Skolvägen",
    "Björkvägen",
];

struct FiKunta {
    number: &'static str,
    city: &'static str,
    city_sv: &'static str,
    postal: u32,
}

const FI_KUNNAT: &[FiKunta] = &[
    FiKunta {
        number: "091",
        city: "HELSINKI",
        city_sv: "HELSINGFORS",
        postal: 100,
    },
    FiKunta {
        number: "049",
        city: "ESPOO",
        city_sv: "ESBO",
        postal: 2_100,
    },
    FiKunta {
        number: "853",
        city: "TURKU",
        city_sv: "ÅBO",
        postal: 20_100,
    },
    FiKunta {
        number: "837",
        city: "TAMPERE",
        city_sv: "TAMMERFORS",
        postal: 33_100,
    },
    FiKunta {
        number: "564",
        city: "OULU",
        city_sv: "ULEÅBORG",
        postal: 90_100,
    },
];

const FI_GIVEN_F: &[&str] = &["Aino", "Helmi", "Sofia", "Venla", "Maria", "Kaisa"];
const FI_GIVEN_M: &[&str] = &["Juhani", "Matti", "Mikko", "Eino", "Onni", "Antero"];
const FI_FAMILY: &[&str] = &[
    "Korhonen",
    "Virtanen",
    "Mäkinen",
    "Nieminen",
    "Mäkelä",
    "Hämäläinen",
    "Laine",
];
const FI_STREETS: &[&str] = &[
    "Mannerheimintie",
    "Hämeenkatu",
    "Aleksanterinkatu",
    "Koulukatu",
];

/// ISO 3166 numeric codes VTJ uses for the citizenships the simulator draws.
pub const FI_CITIZENSHIPS: &[(&str, &str)] = &[
    ("246", "FIN"),
    ("752", "SWE"),
    ("233", "EST"),
    ("643", "RUS"),
    ("578", "NOR"),
];

fn pick<'a>(rng: &mut StdRng, list: &'a [&'a str]) -> &'a str {
    list[rng.gen_range(0..list.len())]
}

fn random_date(rng: &mut StdRng, from: i32, to: i32) -> NaiveDate {
    let start = NaiveDate::from_ymd_opt(from, 1, 1).unwrap_or_default();
    let end = NaiveDate::from_ymd_opt(to, 12, 31).unwrap_or_default();
    start + Duration::days(rng.gen_range(0..=(end - start).num_days()))
}

impl Population {
    /// Adds the Swedes, the Finns and the cross-border persons; called once
    /// by `generate`. `count` is the size of the Norwegian part.
    pub(crate) fn generate_nordic(&mut self, count: usize) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5345_4649_0000_0000);
        let wanted = (count / 4).max(8);
        while self.swedes.len() < wanted {
            self.se_household(&mut rng);
        }
        while self.finns.len() < wanted {
            self.fi_household(&mut rng);
        }
        // Norwegians who moved to Sweden or Finland, and Swedes who moved to Norway.
        let adults: Vec<usize> = (0..self.persons.len())
            .filter(|k| {
                let p = &self.persons[*k];
                !p.is_minor() && p.current_status() == Status::Resident && p.children.is_empty()
            })
            .collect();
        let movers = (count / 60).max(3);
        for (n, key) in adults.iter().copied().step_by(7).take(movers).enumerate() {
            let at = epoch() - Duration::days(200 + n as i64);
            match n % 3 {
                0 => {
                    // Moved from Norway to Sweden.
                    let se = self.se_from_norwegian(&mut rng, key);
                    self.set_emigrated_public(key, at);
                    let id = self.swedes[se].id().to_string();
                    self.foreign_ids.entry(key).or_default().push(("SWE", id));
                }
                1 => {
                    // Moved from Norway to Finland.
                    let fi = self.fi_from_norwegian(&mut rng, key);
                    self.set_emigrated_public(key, at);
                    let id = self.finns[fi].id().to_string();
                    self.foreign_ids.entry(key).or_default().push(("FIN", id));
                }
                _ => {
                    // Moved from Sweden to Norway: SPAR deregistered them (UV).
                    let se = self.se_from_norwegian(&mut rng, key);
                    let person = &mut self.swedes[se];
                    person.address = None;
                    person.deregistered = Some(("UV", at.date_naive()));
                    let id = person.id().to_string();
                    self.foreign_ids.entry(key).or_default().push(("SWE", id));
                }
            }
        }
        self.spar_files.push(SparFile {
            number: 1,
            kind: "NULAGESAVISERING",
            persons: (0..self.swedes.len()).collect(),
            created: epoch(),
        });
        let keys: Vec<usize> = (0..self.finns.len()).collect();
        for key in keys {
            let hetu = self.finns[key].id().to_string();
            self.push_dvv(
                key,
                hetu,
                vec!["HENKILON_NIMI"],
                epoch() - Duration::days(30),
            );
        }
    }

    fn new_swedish_id(
        &mut self,
        rng: &mut StdRng,
        birth: NaiveDate,
        gender: Gender,
        samordning: bool,
    ) -> String {
        loop {
            let mut n = rng.gen_range(0..1000u32);
            // Third digit odd for men, even for women.
            let odd = n % 2 == 1;
            if odd != (gender == Gender::Male) {
                n = (n + 1) % 1000;
            }
            let id = ids::make_swedish(birth, n, samordning);
            if self.used_nordic.insert(id.clone()) {
                return id;
            }
        }
    }

    fn new_hetu(&mut self, rng: &mut StdRng, birth: NaiveDate, gender: Gender) -> String {
        loop {
            // 900–999: the range DVV reserves for test persons.
            let mut n = rng.gen_range(900..1000u32);
            if (n % 2 == 1) != (gender == Gender::Male) {
                n = if n == 999 { 998 } else { n + 1 };
            }
            let sign = if rng.gen_range(0..20) == 0 {
                if birth.year() >= 2000 {
                    ['B', 'C', 'D', 'E', 'F'][rng.gen_range(0..5)]
                } else {
                    ['Y', 'X', 'W', 'V', 'U'][rng.gen_range(0..5)]
                }
            } else {
                '-'
            };
            let id = ids::make_finnish_with_sign(birth, n, sign);
            if self.used_nordic.insert(id.clone()) {
                return id;
            }
        }
    }

    fn se_address(rng: &mut StdRng, since: NaiveDate) -> SeAddress {
        let k = &SE_KOMMUNER[rng.gen_range(0..SE_KOMMUNER.len())];
        let line = if rng.gen_range(0..3) == 0 {
            format!(
                "{} {} LGH {}",
                pick(rng, SE_STREETS),
                rng.gen_range(1..80),
                rng.gen_range(1001..1405)
            )
        } else {
            format!("{} {}", pick(rng, SE_STREETS), rng.gen_range(1..80))
        };
        SeAddress {
            care_of: (rng.gen_range(0..25) == 0)
                .then(|| format!("{} {}", pick(rng, SE_GIVEN_F), pick(rng, SE_FAMILY))),
            line: line.to_uppercase(),
            postal_code: format!("{:05}", k.postal + rng.gen_range(0..40)),
            city: k.city,
            county: k.county,
            municipality: k.municipality,
            since,
        }
    }

    fn se_person(
        &mut self,
        rng: &mut StdRng,
        birth: NaiveDate,
        gender: Gender,
        family: &str,
        address: Option<SeAddress>,
    ) -> usize {
        let key = self.swedes.len();
        let coordination = rng.gen_range(0..40) == 0;
        let names = match gender {
            Gender::Female => SE_GIVEN_F,
            Gender::Male => SE_GIVEN_M,
        };
        let mut given = pick(rng, names).to_string();
        // Every fourth Swede has two given names (without drawing from the
        // generator, so the rest of the population stays as it was); SPAR's
        // Tilltalsnamn then says which one the person is called by.
        if key.is_multiple_of(4) {
            given = format!("{given} {}", names[(key / 4) % names.len()]);
        }
        let mut person_ids = vec![self.new_swedish_id(rng, birth, gender, true)];
        if !coordination {
            if rng.gen_range(0..30) == 0 {
                // Had a samordningsnummer before the personnummer.
                let pnr = self.new_swedish_id(rng, birth, gender, false);
                person_ids.push(pnr);
            } else {
                person_ids = vec![self.new_swedish_id(rng, birth, gender, false)];
            }
        }
        let mut person = SePerson {
            key,
            ids: person_ids,
            given,
            middle: (rng.gen_range(0..6) == 0).then(|| pick(rng, SE_FAMILY).to_string()),
            family: family.to_string(),
            birth,
            gender,
            citizen: rng.gen_range(0..10) < 9,
            address: if coordination { None } else { address },
            secrecy: None,
            protected: None,
            deregistered: None,
            guardians: vec![],
            spouse: None,
            norwegian: None,
            updated: epoch() - Duration::days(rng.gen_range(40..400)),
        };
        if coordination {
            person.citizen = false;
        }
        self.swedes.push(person);
        key
    }

    fn se_household(&mut self, rng: &mut StdRng) {
        let family = pick(rng, SE_FAMILY).to_string();
        let since = random_date(rng, 2000, 2025);
        let address = Self::se_address(rng, since);
        let first_birth = random_date(rng, 1945, 2000);
        let first_gender = if rng.gen_bool(0.5) {
            Gender::Female
        } else {
            Gender::Male
        };
        let first = self.se_person(
            rng,
            first_birth,
            first_gender,
            &family,
            Some(address.clone()),
        );
        let mut parents = vec![first];
        if rng.gen_range(0..100) < 55 {
            let other = if first_gender == Gender::Female {
                Gender::Male
            } else {
                Gender::Female
            };
            let birth = random_date(
                rng,
                first_birth.year() - 4,
                (first_birth.year() + 4).min(2002),
            );
            let second = self.se_person(rng, birth, other, &family, Some(address.clone()));
            self.swedes[first].spouse = Some(second);
            self.swedes[second].spouse = Some(first);
            parents.push(second);
        }
        let children = if first_birth.year() > 1965 {
            rng.gen_range(0..4)
        } else {
            0
        };
        for _ in 0..children {
            let from = (first_birth.year() + 20).min(2024);
            let birth = random_date(rng, from, (from + 18).min(2025));
            let gender = if rng.gen_bool(0.5) {
                Gender::Female
            } else {
                Gender::Male
            };
            let child = self.se_person(rng, birth, gender, &family, Some(address.clone()));
            if self.swedes[child].is_minor() {
                self.swedes[child].guardians = parents.clone();
            }
        }
        // Protection and deaths, by household.
        let roll = rng.gen_range(0..100);
        let keys: Vec<usize> = (first..self.swedes.len()).collect();
        let since = random_date(rng, 2015, 2025);
        for k in &keys {
            let p = &mut self.swedes[*k];
            match roll {
                0..=2 => p.secrecy = Some(since),
                3 => {
                    // Since 2019 SPAR marks sekretess on skyddad folkbokföring too.
                    p.protected = Some(since);
                    p.secrecy = Some(since);
                }
                _ => {}
            }
        }
        if rng.gen_range(0..40) == 0 && first_birth.year() < 1960 {
            let date = random_date(rng, 2024, 2025);
            let p = &mut self.swedes[first];
            p.deregistered = Some(("AV", date));
            p.address = None;
            if let Some(s) = p.spouse {
                self.swedes[s].spouse = None;
                self.swedes[first].spouse = None;
            }
        }
    }

    fn se_from_norwegian(&mut self, rng: &mut StdRng, no: usize) -> usize {
        let p = &self.persons[no];
        let (birth, gender, name) = (p.birth, p.gender, p.name().clone());
        let address = Self::se_address(rng, epoch().date_naive() - Duration::days(200));
        let key = self.swedes.len();
        let id = self.new_swedish_id(rng, birth, gender, false);
        self.swedes.push(SePerson {
            key,
            ids: vec![id],
            given: name.given,
            middle: name.middle,
            family: name.family,
            birth,
            gender,
            citizen: false,
            address: Some(address),
            secrecy: None,
            protected: None,
            deregistered: None,
            guardians: vec![],
            spouse: None,
            norwegian: Some(no),
            updated: epoch() - Duration::days(150),
        });
        key
    }

    fn fi_address(rng: &mut StdRng, since: NaiveDate) -> FiAddress {
        let k = &FI_KUNNAT[rng.gen_range(0..FI_KUNNAT.len())];
        FiAddress {
            street: pick(rng, FI_STREETS).to_string(),
            number: rng.gen_range(1..60),
            flat: (rng.gen_range(0..3) > 0).then(|| {
                format!(
                    "{} {}",
                    ['A', 'B', 'C'][rng.gen_range(0..3)],
                    rng.gen_range(1..40)
                )
            }),
            postal_code: format!("{:05}", k.postal + 10 * rng.gen_range(0..20)),
            city: k.city,
            city_sv: k.city_sv,
            municipality: k.number,
            since,
        }
    }

    fn fi_person(
        &mut self,
        rng: &mut StdRng,
        birth: NaiveDate,
        gender: Gender,
        family: &str,
        address: Option<FiAddress>,
        language: &'static str,
    ) -> usize {
        let key = self.finns.len();
        let mut hetus = vec![self.new_hetu(rng, birth, gender)];
        if rng.gen_range(0..40) == 0 {
            // The first HETU was issued with a wrong date and corrected.
            let wrong = birth + Duration::days(rng.gen_range(1..20));
            let old = self.new_hetu(rng, wrong, gender);
            hetus.insert(0, old);
        }
        let given = match gender {
            Gender::Female => format!("{} {}", pick(rng, FI_GIVEN_F), pick(rng, FI_GIVEN_F)),
            Gender::Male => format!("{} {}", pick(rng, FI_GIVEN_M), pick(rng, FI_GIVEN_M)),
        };
        let citizenship = match rng.gen_range(0..40) {
            0 => vec!["SWE"],
            1 => vec!["EST"],
            2 => vec!["FIN", "RUS"],
            _ => vec!["FIN"],
        };
        self.finns.push(FiPerson {
            key,
            ids: hetus,
            given,
            family: family.to_string(),
            birth,
            gender,
            language,
            citizenship,
            address,
            non_disclosure: false,
            death: None,
            guardians: vec![],
            trustee: None,
            norwegian: None,
            updated: epoch() - Duration::days(rng.gen_range(40..400)),
        });
        key
    }

    fn fi_household(&mut self, rng: &mut StdRng) {
        let family = pick(rng, FI_FAMILY).to_string();
        let since = random_date(rng, 2000, 2025);
        let address = Self::fi_address(rng, since);
        let language = match rng.gen_range(0..20) {
            0..=16 => "fi",
            17 | 18 => "sv",
            _ => "et",
        };
        let first_birth = random_date(rng, 1945, 2000);
        let first_gender = if rng.gen_bool(0.5) {
            Gender::Female
        } else {
            Gender::Male
        };
        let first = self.fi_person(
            rng,
            first_birth,
            first_gender,
            &family,
            Some(address.clone()),
            language,
        );
        let mut parents = vec![first];
        if rng.gen_range(0..100) < 55 {
            let other = if first_gender == Gender::Female {
                Gender::Male
            } else {
                Gender::Female
            };
            let birth = random_date(
                rng,
                first_birth.year() - 4,
                (first_birth.year() + 4).min(2002),
            );
            parents.push(self.fi_person(
                rng,
                birth,
                other,
                &family,
                Some(address.clone()),
                language,
            ));
        }
        let children = if first_birth.year() > 1965 {
            rng.gen_range(0..4)
        } else {
            0
        };
        for _ in 0..children {
            let from = (first_birth.year() + 20).min(2024);
            let birth = random_date(rng, from, (from + 18).min(2025));
            let gender = if rng.gen_bool(0.5) {
                Gender::Female
            } else {
                Gender::Male
            };
            let child =
                self.fi_person(rng, birth, gender, &family, Some(address.clone()), language);
            if self.finns[child].is_minor() {
                self.finns[child].guardians = parents.clone();
            }
        }
        let keys: Vec<usize> = (first..self.finns.len()).collect();
        if rng.gen_range(0..40) == 0 {
            for k in &keys {
                self.finns[*k].non_disclosure = true;
            }
        }
        if rng.gen_range(0..50) == 0 && parents.len() == 2 && first_birth.year() < 1955 {
            // An elderly parent with the spouse as edunvalvoja.
            self.finns[first].trustee = Some(parents[1]);
        }
        if rng.gen_range(0..40) == 0 && first_birth.year() < 1960 {
            self.finns[first].death = Some(random_date(rng, 2024, 2025));
        }
    }

    fn fi_from_norwegian(&mut self, rng: &mut StdRng, no: usize) -> usize {
        let p = &self.persons[no];
        let (birth, gender, name) = (p.birth, p.gender, p.name().clone());
        let address = Self::fi_address(rng, epoch().date_naive() - Duration::days(200));
        let key = self.finns.len();
        let hetu = self.new_hetu(rng, birth, gender);
        let given = match &name.middle {
            Some(m) => format!("{} {m}", name.given),
            None => name.given.clone(),
        };
        self.finns.push(FiPerson {
            key,
            ids: vec![hetu],
            given,
            family: name.family,
            birth,
            gender,
            language: "no",
            citizenship: vec!["NOR"],
            address: Some(address),
            non_disclosure: false,
            death: None,
            guardians: vec![],
            trustee: None,
            norwegian: Some(no),
            updated: epoch() - Duration::days(150),
        });
        key
    }

    fn push_dvv(
        &mut self,
        person: usize,
        hetu: String,
        groups: Vec<&'static str>,
        at: DateTime<Utc>,
    ) {
        let key = 1_000_000 + self.dvv_log.len() as u64;
        self.dvv_log.push(DvvEntry {
            key,
            person,
            hetu,
            groups,
            at,
        });
    }

    /// The key DVV would give for the first change on or after `date`.
    pub fn dvv_key_at(&self, date: NaiveDate) -> u64 {
        self.dvv_log
            .iter()
            .find(|e| e.at.date_naive() >= date)
            .map(|e| e.key - 1)
            .unwrap_or_else(|| self.dvv_log.last().map_or(999_999, |e| e.key))
    }

    /// Applies one Swedish or Finnish change (drawn by `apply_next_change`).
    pub(crate) fn apply_nordic_change(&mut self, rng: &mut StdRng, kind: &str, at: DateTime<Utc>) {
        if kind.starts_with("se-") {
            if self.swedes.is_empty() {
                return;
            }
            let key = rng.gen_range(0..self.swedes.len());
            if self.swedes[key].deregistered.is_some() {
                return;
            }
            match kind {
                "se-move" => {
                    if self.swedes[key].address.is_some() {
                        self.swedes[key].address = Some(Self::se_address(rng, at.date_naive()));
                    }
                }
                "se-name" => self.swedes[key].family = pick(rng, SE_FAMILY).to_string(),
                "se-protection" => {
                    let p = &mut self.swedes[key];
                    if p.secrecy.is_some() {
                        p.secrecy = None;
                        p.protected = None;
                    } else {
                        p.secrecy = Some(at.date_naive());
                    }
                }
                "se-death" => {
                    let p = &mut self.swedes[key];
                    p.deregistered = Some(("AV", at.date_naive()));
                    p.address = None;
                }
                "se-personnummer" if self.swedes[key].is_coordination() => {
                    let (birth, gender) = (self.swedes[key].birth, self.swedes[key].gender);
                    let pnr = self.new_swedish_id(rng, birth, gender, false);
                    let p = &mut self.swedes[key];
                    p.ids.push(pnr);
                    p.citizen = false;
                    p.address = Some(Self::se_address(rng, at.date_naive()));
                }
                _ => return,
            }
            self.swedes[key].updated = at;
            self.pending_spar.push(key);
            if matches!(kind, "se-death" | "se-personnummer") {
                // The children's relations changed too: SPAR notifies them.
                let dependents: Vec<usize> = self
                    .swedes
                    .iter()
                    .filter(|c| c.guardians.contains(&key))
                    .map(|c| c.key)
                    .collect();
                for c in dependents {
                    self.swedes[c].updated = at;
                    self.pending_spar.push(c);
                }
            }
        } else {
            if self.finns.is_empty() {
                return;
            }
            let key = rng.gen_range(0..self.finns.len());
            if self.finns[key].death.is_some() {
                return;
            }
            let hetu = self.finns[key].id().to_string();
            let groups = match kind {
                "fi-move" => {
                    self.finns[key].address = Some(Self::fi_address(rng, at.date_naive()));
                    vec!["VAKINAINEN_KOTIMAINEN_OSOITE", "KOTIKUNTA"]
                }
                "fi-name" => {
                    self.finns[key].family = pick(rng, FI_FAMILY).to_string();
                    vec!["HENKILON_NIMI", "NIMENMUUTOS"]
                }
                "fi-protection" => {
                    let p = &mut self.finns[key];
                    p.non_disclosure = !p.non_disclosure;
                    vec!["TURVAKIELTO"]
                }
                "fi-death" => {
                    self.finns[key].death = Some(at.date_naive());
                    vec!["KUOLINPAIVA"]
                }
                "fi-hetu" => {
                    let (birth, gender) = (self.finns[key].birth, self.finns[key].gender);
                    let new = self.new_hetu(rng, birth, gender);
                    self.finns[key].ids.push(new);
                    vec!["HENKILOTUNNUS_KORJAUS"]
                }
                _ => return,
            };
            self.finns[key].updated = at;
            let related = matches!(kind, "fi-hetu" | "fi-death");
            self.push_dvv(key, hetu, groups, at);
            if related {
                // The custodian or guardian of others changed: their
                // custody and guardianship data changed too.
                let dependents: Vec<(usize, &'static str)> = self
                    .finns
                    .iter()
                    .filter_map(|c| {
                        if c.guardians.contains(&key) {
                            Some((c.key, "HUOLTAJA_SUPPEA"))
                        } else if c.trustee == Some(key) {
                            Some((c.key, "EDUNVALVONTA"))
                        } else {
                            None
                        }
                    })
                    .collect();
                for (c, group) in dependents {
                    let id = self.finns[c].id().to_string();
                    self.finns[c].updated = at;
                    self.push_dvv(c, id, vec![group], at);
                }
            }
        }
    }

    /// Cuts a SPAR avisering file of the Swedes changed since the last one.
    pub(crate) fn cut_spar_file(&mut self) {
        if self.pending_spar.is_empty() {
            return;
        }
        let mut persons = std::mem::take(&mut self.pending_spar);
        persons.sort_unstable();
        persons.dedup();
        self.spar_files.push(SparFile {
            number: self.spar_files.len() as u64 + 1,
            kind: "ANDRINGSAVISERING",
            persons,
            created: self.clock(),
        });
    }

    pub fn find_swede(&self, id: &str) -> Option<&SePerson> {
        self.swedes.iter().find(|p| p.ids.iter().any(|i| i == id))
    }

    pub fn find_finn(&self, id: &str) -> Option<&FiPerson> {
        self.finns.iter().find(|p| p.ids.iter().any(|i| i == id))
    }

    /// Fields SPAR provides for a Swede, in catalogue form.
    pub fn se_fields(&self, p: &SePerson) -> BTreeMap<String, Value> {
        let mut f = BTreeMap::new();
        if p.secrecy.is_some() {
            f.insert("protection.se-secrecy".into(), json!(true));
        }
        if p.protected.is_some() {
            f.insert("protection.se-protected-registration".into(), json!(true));
        }
        if p.is_protected() {
            // SPAR sends nothing but the ID and the markers.
            return f;
        }
        f.insert("status".into(), json!(p.status()));
        if let Some(("AV", d)) = p.deregistered {
            f.insert("death.date".into(), json!(d.to_string()));
        }
        f.insert("name.given".into(), json!(p.given));
        if let Some(call) = crate::spar::call_name_code(p).and_then(|code| {
            let index = code[..1].parse::<usize>().ok()?;
            p.given.split(' ').nth(index.checked_sub(1)?)
        }) {
            f.insert("name.call".into(), json!(call));
        }
        if let Some(m) = &p.middle {
            f.insert("name.middle".into(), json!(m));
        }
        f.insert("name.family".into(), json!(p.family));
        f.insert("birth.date".into(), json!(p.birth.to_string()));
        f.insert("gender".into(), json!(gender(p.gender)));
        if p.citizen {
            f.insert("citizenship".into(), json!(["SWE"]));
        }
        if let Some(a) = &p.address {
            f.insert("address.residential".into(), se_canonical_address(a));
            f.insert("address.municipality".into(), json!(a.municipality_code()));
        }
        if let Some(d) = crate::spar::district_code(p) {
            f.insert("address.se-district".into(), json!(d));
        }
        if let Some((line, postal_code, city)) = crate::spar::special_postal_address(p) {
            f.insert(
                "address.postal".into(),
                json!({"kind": "postal", "lines": [line], "postal_code": postal_code, "city": city, "country": "SWE"}),
            );
        }
        let mut guardians: Vec<Value> = p
            .guardians
            .iter()
            .map(|g| &self.swedes[*g])
            .filter(|g| g.deregistered.is_none())
            .map(|g| json!({"role": "other", "id": g.id()}))
            .collect();
        guardians.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_string());
        if !guardians.is_empty() {
            f.insert(
                "relations.parental-responsibility".into(),
                Value::Array(guardians),
            );
        }
        f
    }

    /// Fields DVV provides for a Finn with a full message product.
    pub fn fi_fields(&self, p: &FiPerson) -> BTreeMap<String, Value> {
        let mut f = BTreeMap::new();
        f.insert("name.given".into(), json!(p.given));
        if let Some(call) = p.given.split(' ').next() {
            f.insert("name.call".into(), json!(call));
        }
        if let Some(e) = crate::dvv::email(p) {
            f.insert("contact.email".into(), json!(e));
        }
        // VTJ's codes (inferred, see docs/simulators.md) in the catalogue's words.
        if let Some(code) = crate::dvv::civil_status_code(p) {
            let status = match code {
                "1" => "unmarried",
                "2" => "married",
                "3" => "divorced",
                _ => "widowed",
            };
            f.insert("civil-status".into(), json!(status));
        }
        if let Some((line, postal_code, city)) = crate::dvv::postal_address(p) {
            f.insert(
                "address.postal".into(),
                json!({"kind": "postal", "lines": [line], "postal_code": postal_code, "city": city, "country": "FIN"}),
            );
        }
        f.insert("name.family".into(), json!(p.family));
        f.insert("birth.date".into(), json!(p.birth.to_string()));
        f.insert("gender".into(), json!(gender(p.gender)));
        f.insert("language.preferred".into(), json!(p.language));
        f.insert("citizenship".into(), json!(p.citizenship));
        if p.non_disclosure {
            f.insert("protection.fi-non-disclosure".into(), json!(true));
        }
        match p.death {
            Some(d) => {
                f.insert("status".into(), json!("deceased"));
                f.insert("death.date".into(), json!(d.to_string()));
            }
            None => {
                f.insert("status".into(), json!("resident"));
                if let Some(a) = &p.address {
                    f.insert("address.residential".into(), fi_canonical_address(a));
                    f.insert("address.municipality".into(), json!(a.municipality));
                }
            }
        }
        let mut guardians: Vec<Value> = p
            .guardians
            .iter()
            .map(|g| &self.finns[*g])
            .filter(|g| g.death.is_none())
            .map(|g| json!({"role": "other", "id": g.id()}))
            .collect();
        guardians.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_string());
        if !guardians.is_empty() && p.death.is_none() {
            f.insert(
                "relations.parental-responsibility".into(),
                Value::Array(guardians),
            );
        }
        if let Some(t) = p.trustee.filter(|_| p.death.is_none()) {
            f.insert(
                "relations.guardianship".into(),
                json!([{"role": "guardian", "id": self.finns[t].id()}]),
            );
        }
        f
    }
}

pub fn gender(g: Gender) -> &'static str {
    match g {
        Gender::Female => "female",
        Gender::Male => "male",
    }
}

/// The catalogue's postal address object for a Swedish address.
pub fn se_canonical_address(a: &SeAddress) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), json!("postal"));
    if let Some(c) = &a.care_of {
        m.insert("care_of".into(), json!(c));
    }
    m.insert("lines".into(), json!([a.line]));
    m.insert("postal_code".into(), json!(a.postal_code));
    m.insert("city".into(), json!(a.city));
    m.insert("municipality".into(), json!(a.municipality_code()));
    m.insert("country".into(), json!("SWE"));
    Value::Object(m)
}

/// The catalogue's postal address object for a Finnish address.
pub fn fi_canonical_address(a: &FiAddress) -> Value {
    json!({
        "kind": "postal",
        "lines": [a.line()],
        "postal_code": a.postal_code,
        "city": a.city,
        "municipality": a.municipality,
        "country": "FIN",
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_country_has_protected_persons_id_changes_and_border_crossers() {
        let mut p = Population::generate(11, 2000);
        p.advance(800);
        for se in &p.swedes {
            for id in &se.ids {
                let parsed = ids::parse_swedish(id).unwrap_or_else(|e| panic!("{id}: {e}"));
                assert_eq!(parsed.value, *id);
            }
        }
        for fi in &p.finns {
            for id in &fi.ids {
                let parsed = ids::parse_finnish(id).unwrap_or_else(|e| panic!("{id}: {e}"));
                assert!(parsed.synthetic, "{id}: test HETUs use 900-999");
            }
        }
        assert!(p.swedes.iter().any(|s| s.secrecy.is_some()));
        assert!(p.swedes.iter().any(|s| s.protected.is_some()));
        assert!(p.finns.iter().any(|f| f.non_disclosure));
        assert!(
            p.swedes.iter().any(|s| s.ids.len() > 1),
            "samordningsnummer → personnummer"
        );
        assert!(p.swedes.iter().any(|s| s.is_coordination()));
        assert!(p.finns.iter().any(|f| f.ids.len() > 1), "corrected HETU");
        assert!(p.swedes.iter().any(|s| s.norwegian.is_some()));
        assert!(p.finns.iter().any(|f| f.norwegian.is_some()));
        assert!(p.finns.iter().any(|f| f.trustee.is_some()));
        assert!(p.swedes.iter().any(|s| !s.guardians.is_empty()));
        assert!(
            p.finns.iter().any(|f| f
                .id()
                .chars()
                .nth(6)
                .is_some_and(|c| "YXWVUBCDEF".contains(c))),
            "new century signs"
        );
        assert!(p.spar_files.len() > 1, "avisering files after changes");
        assert!(p.dvv_log.len() > p.finns.len(), "DVV change log grows");
        // A border crosser: Folkeregisteret names the foreign ID, and the
        // truth holds both countries' IDs on one person.
        let truth = p.truth();
        let (no, _) = p.foreign_ids.iter().next().unwrap();
        let t = &truth[*no];
        assert!(t.ids.len() >= 2);
        assert_eq!(t.ids.last().unwrap(), p.persons[*no].id());
    }
}
