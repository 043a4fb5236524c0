//! A deterministic synthetic population and its stream of changes.
//!
//! `Population::generate(seed, count)` builds households (couples with
//! children, single adults), valid synthetic IDs (Norwegian month+80 as
//! Skatteetaten's test population uses, some D-numbers), addresses in a few
//! municipalities, protected addresses at every grade, deaths and
//! emigrations. `apply_next_change` advances the population by one change
//! drawn from a seeded generator, so the same seed and number of changes
//! always give the same population. `truth()` gives the canonical values a
//! correct merge must produce.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use folkhub_core::ids;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

/// When the synthetic population was "registered"; change times follow it.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The day the population's ages are computed for.
pub fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Gender {
    Female,
    Male,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Resident,
    Emigrated,
    Deceased,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Grading {
    Ugradert,
    Klientadresse,
    Fortrolig,
    StrengtFortrolig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Civil {
    Unmarried,
    Married,
    Widowed,
    Divorced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AddressKind {
    Street {
        street: String,
        number: u32,
        letter: Option<char>,
        street_code: u32,
    },
    Cadastral {
        farm: u32,
        holding: u32,
    },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub kind: AddressKind,
    pub unit: Option<String>,
    pub municipality: &'static str,
    pub postal_code: String,
    pub city: &'static str,
    /// The four-digit grunnkrets within the municipality.
    pub statistical_unit: u32,
    pub moved_in: NaiveDate,
}

/// One value with the time it took effect, as FREG keeps versions.
#[derive(Debug, Clone, Serialize)]
pub struct Version<T> {
    pub value: T,
    pub valid_from: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Name {
    pub given: String,
    pub middle: Option<String>,
    pub family: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Person {
    /// Index in the population; stable.
    pub key: usize,
    /// IDs this person has had, oldest first; the last is in use.
    pub ids: Vec<String>,
    pub names: Vec<Version<Name>>,
    pub birth: NaiveDate,
    pub gender: Gender,
    pub status: Vec<Version<Status>>,
    pub death: Option<NaiveDate>,
    pub addresses: Vec<Version<Option<Address>>>,
    pub grading: Vec<Version<Grading>>,
    pub civil: Vec<Version<Civil>>,
    pub spouse: Option<usize>,
    pub citizenship: Vec<&'static str>,
    pub mother: Option<usize>,
    pub father: Option<usize>,
    pub children: Vec<usize>,
    /// Last time anything about the person changed.
    pub updated: DateTime<Utc>,
}

impl Person {
    pub fn id(&self) -> &str {
        self.ids.last().map(String::as_str).unwrap_or_default()
    }
    pub fn name(&self) -> &Name {
        &self.names[self.names.len() - 1].value
    }
    pub fn current_status(&self) -> Status {
        self.status[self.status.len() - 1].value
    }
    pub fn address(&self) -> Option<&Address> {
        self.addresses.last().and_then(|v| v.value.as_ref())
    }
    pub fn current_grading(&self) -> Grading {
        self.grading.last().map_or(Grading::Ugradert, |v| v.value)
    }
    pub fn current_civil(&self) -> Civil {
        self.civil[self.civil.len() - 1].value
    }
    pub fn is_minor(&self) -> bool {
        let today = today();
        let mut age = today.year() - self.birth.year();
        if (today.month(), today.day()) < (self.birth.month(), self.birth.day()) {
            age -= 1;
        }
        age < 18
    }
}

/// A person's entry in KRR (the Norwegian contact and reservation register).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KrrStatus {
    Active,
    Deleted,
    NotRegistered,
}

#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    pub status: KrrStatus,
    pub reserved: bool,
    pub email: Option<String>,
    pub mobile: Option<String>,
    /// (postkasseadresse, leverandør org.nr)
    pub mailbox: Option<(String, String)>,
    pub language: &'static str,
    /// When the person last confirmed the contact details.
    pub verified: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

impl Contact {
    fn not_registered(at: DateTime<Utc>) -> Contact {
        Contact {
            status: KrrStatus::NotRegistered,
            reserved: false,
            email: None,
            mobile: None,
            mailbox: None,
            language: "nb",
            verified: at,
            updated: at,
        }
    }

    /// KRR's varslingsstatus: active, not reserved, reachable, and
    /// confirmed within the last 18 months.
    pub fn can_notify(&self) -> bool {
        self.status == KrrStatus::Active
            && !self.reserved
            && (self.email.is_some() || self.mobile.is_some())
            && self.verified > epoch() - Duration::days(548)
    }
}

/// One entry of KRR's change log.
#[derive(Debug, Clone, Serialize)]
pub struct KrrChange {
    pub number: u64,
    pub person: usize,
}

/// One event in the register's feed.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub sequence: u64,
    pub person: usize,
    /// The ID the event names (the person's ID at the time).
    pub id: String,
    pub kind: &'static str,
    pub recorded: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Population {
    pub seed: u64,
    pub persons: Vec<Person>,
    pub events: Vec<Event>,
    pub changes_applied: u64,
    /// KRR entry per person (same index as `persons`).
    pub contacts: Vec<Contact>,
    /// KRR's change log, oldest first.
    pub krr_changes: Vec<KrrChange>,
    /// Swedes in SPAR (see `nordic`).
    pub swedes: Vec<crate::nordic::SePerson>,
    /// Finns in DVV.
    pub finns: Vec<crate::nordic::FiPerson>,
    /// SPAR avisering files, oldest first.
    pub spar_files: Vec<crate::nordic::SparFile>,
    /// DVV's change log, oldest first.
    pub dvv_log: Vec<crate::nordic::DvvEntry>,
    /// Foreign IDs Folkeregisteret holds for a person (country, ID).
    pub foreign_ids: BTreeMap<usize, Vec<(&'static str, String)>>,
    pub(crate) pending_spar: Vec<usize>,
    pub(crate) used_nordic: std::collections::HashSet<String>,
    clock: DateTime<Utc>,
    used_ids: std::collections::HashSet<String>,
}

struct Municipality {
    number: &'static str,
    city: &'static str,
    postal_base: u32,
    postal_span: u32,
}

const MUNICIPALITIES: &[Municipality] = &[
    Municipality {
        number: "0301",
        city: "OSLO",
        postal_base: 150,
        postal_span: 1100,
    },
    Municipality {
        number: "4601",
        city: "BERGEN",
        postal_base: 5003,
        postal_span: 260,
    },
    Municipality {
        number: "5001",
        city: "TRONDHEIM",
        postal_base: 7010,
        postal_span: 90,
    },
    Municipality {
        number: "1103",
        city: "STAVANGER",
        postal_base: 4005,
        postal_span: 90,
    },
    Municipality {
        number: "5501",
        city: "TROMSØ",
        postal_base: 9006,
        postal_span: 30,
    },
    Municipality {
        number: "3403",
        city: "HAMAR",
        postal_base: 2300,
        postal_span: 30,
    },
];

const ADJECTIVES: &[&str] = &[
    "VAKKER", "LUN", "MODIG", "STILLE", "GLAD", "RASK", "KLOK", "STERK", "ROLIG", "LYS", "MYK",
    "VILL", "TAPPER", "EDEL", "BLID", "FRISK", "SNILL", "ÆRLIG", "KJEKK", "VARM", "KALD", "SKARP",
    "RUND", "TRYGG",
];
const NOUNS: &[&str] = &[
    "BLOMST", "ELV", "FJELL", "SKOG", "BRO", "STJERNE", "BJØRK", "ØRN", "ULV", "REV", "HARE",
    "BØLGE", "STEIN", "TIND", "DAL", "VIK", "ØY", "LYNG", "MOSE", "FOSS", "SKY", "STRAND", "KILDE",
    "EIK", "GRAN", "ROS", "LINNEA", "ASK",
];
const STREET_PARTS: &[&str] = &[
    "Test", "Bjørke", "Fjord", "Sol", "Granitt", "Kirke", "Skole", "Stasjons", "Hage", "Eike",
    "Mølle", "Sjø", "Bakke", "Lind", "Havne", "Torv", "Løkke", "Berg", "Engel", "Åsen",
];
const STREET_SUFFIXES: &[&str] = &["veien", "gata", "vegen", "stien", "bakken"];
const CITIZENSHIPS: &[&str] = &["NOR", "SWE", "DNK", "POL", "DEU", "SOM", "SYR", "LTU"];

/// Kinds of change the generator draws, with weights.
const CHANGE_KINDS: &[(&str, u32)] = &[
    ("move", 30),
    ("name", 15),
    ("death", 8),
    ("emigration", 6),
    ("protection", 6),
    ("birth", 12),
    ("id-change", 8),
    ("marriage", 8),
    ("touch", 7),
    ("contact", 12),
    ("se-move", 6),
    ("se-name", 2),
    ("se-protection", 1),
    ("se-death", 1),
    ("se-personnummer", 2),
    ("fi-move", 6),
    ("fi-name", 2),
    ("fi-protection", 1),
    ("fi-death", 1),
    ("fi-hetu", 1),
];

impl Population {
    /// Builds the population. Same seed and count, same population.
    pub fn generate(seed: u64, count: usize) -> Population {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut population = Population {
            seed,
            persons: Vec::with_capacity(count),
            events: Vec::new(),
            contacts: Vec::new(),
            krr_changes: Vec::new(),
            changes_applied: 0,
            swedes: Vec::new(),
            finns: Vec::new(),
            spar_files: Vec::new(),
            dvv_log: Vec::new(),
            foreign_ids: BTreeMap::new(),
            pending_spar: Vec::new(),
            used_nordic: Default::default(),
            clock: epoch(),
            used_ids: Default::default(),
        };
        while population.persons.len() < count {
            let remaining = count - population.persons.len();
            population.generate_household(&mut rng, remaining);
        }
        population.persons.truncate(count);
        // Remove links to persons cut by the truncation.
        for person in &mut population.persons {
            person.children.retain(|c| *c < count);
            if person.spouse.is_some_and(|s| s >= count) {
                person.spouse = None;
            }
        }
        population.contacts = (0..population.persons.len())
            .map(|key| population.generate_contact(key))
            .collect();
        let created = epoch() - Duration::days(30);
        for key in 0..population.persons.len() {
            let id = population.persons[key].id().to_string();
            population.push_event(key, id, "personErOpprettet", created);
        }
        population.generate_nordic(count);
        population
    }

    /// The simulated clock (time of the last change).
    pub fn clock(&self) -> DateTime<Utc> {
        self.clock
    }

    pub(crate) fn set_emigrated_public(&mut self, key: usize, at: DateTime<Utc>) {
        self.set_emigrated(key, at);
    }

    /// A KRR entry drawn from its own seeded generator, so adding KRR did
    /// not change the rest of the population.
    fn generate_contact(&self, key: usize) -> Contact {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x4b52_5200_0000_0000 ^ key as u64);
        let person = &self.persons[key];
        let at = epoch() - Duration::days(rng.gen_range(40..500));
        let age = today().year() - person.birth.year();
        if age < 13 {
            return Contact::not_registered(at);
        }
        if person.current_status() == Status::Deceased {
            return Contact {
                status: KrrStatus::Deleted,
                ..Contact::not_registered(at)
            };
        }
        let roll = rng.gen_range(0..100);
        if roll < 7 {
            return Contact::not_registered(at);
        }
        if roll < 11 {
            return Contact {
                status: KrrStatus::Deleted,
                ..Contact::not_registered(at)
            };
        }
        let name = person.name();
        let email = (rng.gen_range(0..10) < 9).then(|| contact_email(name, key, 0));
        let mobile =
            (rng.gen_range(0..10) < 8).then(|| format!("+474{:07}", rng.gen_range(0..10_000_000)));
        let mailbox = (rng.gen_range(0..10) < 3).then(|| {
            let provider = if rng.gen_bool(0.7) {
                "984661185"
            } else {
                "922020175"
            };
            (
                format!(
                    "{}#{:04}",
                    ascii(&name.given).to_lowercase(),
                    rng.gen_range(0..10_000)
                ),
                provider.to_string(),
            )
        });
        let language = match rng.gen_range(0..20) {
            0..=15 => "nb",
            16..=18 => "nn",
            _ => "en",
        };
        let verified = if rng.gen_range(0..20) == 0 {
            epoch() - Duration::days(700)
        } else {
            at
        };
        Contact {
            status: KrrStatus::Active,
            reserved: rng.gen_range(0..100) < 9,
            email,
            mobile,
            mailbox,
            language,
            verified,
            updated: at,
        }
    }

    fn push_krr_change(&mut self, person: usize) {
        let number = self.krr_changes.len() as u64 + 1;
        self.krr_changes.push(KrrChange { number, person });
    }

    fn push_event(
        &mut self,
        person: usize,
        id: String,
        kind: &'static str,
        recorded: DateTime<Utc>,
    ) {
        let sequence = self.events.len() as u64 + 1;
        self.events.push(Event {
            sequence,
            person,
            id,
            kind,
            recorded,
        });
    }

    fn new_id(
        &mut self,
        rng: &mut StdRng,
        birth: NaiveDate,
        gender: Gender,
        d_number: bool,
    ) -> String {
        let range = ids::norwegian_individual_range(birth.year());
        loop {
            let mut individual = rng.gen_range(range.clone());
            // The third individual digit is odd for men.
            let odd = individual % 2 == 1;
            if odd != (gender == Gender::Male) {
                individual = if individual == *range.end() {
                    individual - 1
                } else {
                    individual + 1
                };
            }
            if let Some(id) = ids::make_norwegian(birth, individual, d_number, true)
                && self.used_ids.insert(id.clone())
            {
                return id;
            }
        }
    }

    fn random_address(rng: &mut StdRng, moved_in: NaiveDate) -> Address {
        let m = &MUNICIPALITIES[rng.gen_range(0..MUNICIPALITIES.len())];
        let roll = rng.gen_range(0..100);
        let kind = if roll < 88 {
            let part = STREET_PARTS[rng.gen_range(0..STREET_PARTS.len())];
            let suffix = STREET_SUFFIXES[rng.gen_range(0..STREET_SUFFIXES.len())];
            AddressKind::Street {
                street: format!("{part}{suffix}"),
                number: rng.gen_range(1..120),
                letter: if rng.gen_range(0..5) == 0 {
                    Some((b'A' + rng.gen_range(0..4)) as char)
                } else {
                    None
                },
                street_code: rng.gen_range(1000..30000),
            }
        } else if roll < 97 {
            AddressKind::Cadastral {
                farm: rng.gen_range(1..300),
                holding: rng.gen_range(1..60),
            }
        } else {
            AddressKind::Unknown
        };
        let unit = if matches!(kind, AddressKind::Street { .. }) && rng.gen_range(0..3) == 0 {
            Some(format!("H0{}0{}", rng.gen_range(1..6), rng.gen_range(1..5)))
        } else {
            None
        };
        Address {
            unit,
            municipality: m.number,
            postal_code: format!("{:04}", m.postal_base + rng.gen_range(0..m.postal_span)),
            city: m.city,
            statistical_unit: rng.gen_range(1..20) * 100 + rng.gen_range(1..40),
            moved_in,
            kind,
        }
    }

    fn random_name(rng: &mut StdRng, family: &str) -> Name {
        Name {
            given: ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())].to_string(),
            middle: if rng.gen_range(0..6) == 0 {
                Some(NOUNS[rng.gen_range(0..NOUNS.len())].to_string())
            } else {
                None
            },
            family: family.to_string(),
        }
    }

    fn make_person(
        &mut self,
        rng: &mut StdRng,
        birth: NaiveDate,
        gender: Gender,
        family: &str,
        address: Option<Address>,
        grading: Grading,
    ) -> usize {
        let d_number = rng.gen_range(0..100) < 4;
        let id = self.new_id(rng, birth, gender, d_number);
        let at = epoch() - Duration::days(30);
        let citizenship = if d_number {
            vec![CITIZENSHIPS[rng.gen_range(1..CITIZENSHIPS.len())]]
        } else if rng.gen_range(0..20) == 0 {
            vec!["NOR", CITIZENSHIPS[rng.gen_range(1..CITIZENSHIPS.len())]]
        } else {
            vec!["NOR"]
        };
        self.push_person(
            vec![id],
            Self::random_name(rng, family),
            birth,
            gender,
            address,
            grading,
            citizenship,
            at,
        )
    }

    /// Adds a resident, unmarried person and returns its key.
    #[allow(clippy::too_many_arguments)]
    fn push_person(
        &mut self,
        ids: Vec<String>,
        name: Name,
        birth: NaiveDate,
        gender: Gender,
        address: Option<Address>,
        grading: Grading,
        citizenship: Vec<&'static str>,
        at: DateTime<Utc>,
    ) -> usize {
        let key = self.persons.len();
        self.persons.push(Person {
            key,
            ids,
            names: vec![Version {
                value: name,
                valid_from: at,
            }],
            birth,
            gender,
            status: vec![Version {
                value: Status::Resident,
                valid_from: at,
            }],
            death: None,
            addresses: vec![Version {
                value: address,
                valid_from: at,
            }],
            grading: if grading == Grading::Ugradert {
                vec![]
            } else {
                vec![Version {
                    value: grading,
                    valid_from: at,
                }]
            },
            civil: vec![Version {
                value: Civil::Unmarried,
                valid_from: at,
            }],
            spouse: None,
            citizenship,
            mother: None,
            father: None,
            children: vec![],
            updated: at,
        });
        key
    }

    fn random_grading(rng: &mut StdRng) -> Grading {
        match rng.gen_range(0..1000) {
            0..=9 => Grading::StrengtFortrolig,
            10..=29 => Grading::Fortrolig,
            30..=34 => Grading::Klientadresse,
            _ => Grading::Ugradert,
        }
    }

    fn random_date(rng: &mut StdRng, from_year: i32, to_year: i32) -> NaiveDate {
        let year = rng.gen_range(from_year..=to_year);
        NaiveDate::from_ymd_opt(year, rng.gen_range(1..=12), rng.gen_range(1..=28))
            .unwrap_or_default()
    }

    fn generate_household(&mut self, rng: &mut StdRng, remaining: usize) {
        let family = NOUNS[rng.gen_range(0..NOUNS.len())].to_string();
        let moved_in = Self::random_date(rng, 2000, 2025);
        let address = Self::random_address(rng, moved_in);
        let grading = Self::random_grading(rng);
        let couple = rng.gen_range(0..100) < 60 && remaining >= 2;
        let first_birth = Self::random_date(rng, 1950, 2000);
        let first_gender = if rng.gen_bool(0.5) {
            Gender::Female
        } else {
            Gender::Male
        };
        let first = self.make_person(
            rng,
            first_birth,
            first_gender,
            &family,
            Some(address.clone()),
            grading,
        );
        let mut parents = vec![first];
        if couple {
            let birth = Self::random_date(
                rng,
                first_birth.year() - 5,
                (first_birth.year() + 5).min(2002),
            );
            let gender = if first_gender == Gender::Female {
                Gender::Male
            } else {
                Gender::Female
            };
            let second =
                self.make_person(rng, birth, gender, &family, Some(address.clone()), grading);
            if rng.gen_range(0..100) < 70 {
                self.marry(first, second, epoch() - Duration::days(30));
            }
            parents.push(second);
        }
        let youngest_parent = parents
            .iter()
            .map(|p| self.persons[*p].birth.year())
            .max()
            .unwrap_or(1980);
        let children = if couple {
            rng.gen_range(0..4)
        } else {
            rng.gen_range(0..2)
        };
        for _ in 0..children {
            if self.persons.len() >= self.persons.capacity() {
                break;
            }
            let from = youngest_parent + 20;
            let to = (youngest_parent + 42).min(2025);
            if from > to {
                break;
            }
            let birth = Self::random_date(rng, from, to);
            let gender = if rng.gen_bool(0.5) {
                Gender::Female
            } else {
                Gender::Male
            };
            let child =
                self.make_person(rng, birth, gender, &family, Some(address.clone()), grading);
            self.link_child(child, &parents);
        }
        // Some adults are deceased or emigrated at generation time.
        for &p in &parents {
            let roll = rng.gen_range(0..100);
            let at = epoch() - Duration::days(30);
            if roll < 2 && self.persons[p].children.is_empty() {
                let date = Self::random_date(rng, 2020, 2025);
                self.set_deceased(p, date, at);
            } else if roll < 4
                && self.persons[p].children.is_empty()
                && self.persons[p].spouse.is_none()
            {
                self.set_emigrated(p, at);
            }
        }
    }

    fn marry(&mut self, a: usize, b: usize, at: DateTime<Utc>) {
        for (x, y) in [(a, b), (b, a)] {
            self.persons[x].spouse = Some(y);
            self.persons[x].civil.push(Version {
                value: Civil::Married,
                valid_from: at,
            });
        }
    }

    fn link_child(&mut self, child: usize, parents: &[usize]) {
        for &p in parents {
            match self.persons[p].gender {
                Gender::Female => self.persons[child].mother = Some(p),
                Gender::Male => self.persons[child].father = Some(p),
            }
            self.persons[p].children.push(child);
        }
    }

    fn set_deceased(&mut self, key: usize, date: NaiveDate, at: DateTime<Utc>) {
        let person = &mut self.persons[key];
        person.death = Some(date);
        person.status.push(Version {
            value: Status::Deceased,
            valid_from: at,
        });
        person.updated = at;
        if let Some(spouse) = person.spouse {
            self.persons[spouse].civil.push(Version {
                value: Civil::Widowed,
                valid_from: at,
            });
            self.persons[spouse].updated = at;
        }
    }

    fn set_emigrated(&mut self, key: usize, at: DateTime<Utc>) {
        let person = &mut self.persons[key];
        person.status.push(Version {
            value: Status::Emigrated,
            valid_from: at,
        });
        person.addresses.push(Version {
            value: None,
            valid_from: at,
        });
        person.updated = at;
    }

    /// Applies `n` more changes.
    pub fn advance(&mut self, n: u64) {
        for _ in 0..n {
            self.apply_next_change();
        }
        self.cut_spar_file();
    }

    /// Applies the next change of the deterministic stream.
    pub fn apply_next_change(&mut self) {
        let index = self.changes_applied;
        self.changes_applied += 1;
        let mut rng = StdRng::seed_from_u64(
            self.seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(index),
        );
        self.clock += Duration::minutes(37);
        let at = self.clock;
        let total: u32 = CHANGE_KINDS.iter().map(|(_, w)| w).sum();
        let mut roll = rng.gen_range(0..total);
        let mut kind = "touch";
        for (k, w) in CHANGE_KINDS {
            if roll < *w {
                kind = k;
                break;
            }
            roll -= w;
        }
        if kind.starts_with("se-") || kind.starts_with("fi-") {
            self.apply_nordic_change(&mut rng, kind, at);
            return;
        }
        // Pick a living resident; give up after a few tries (tiny populations).
        let mut target = None;
        for _ in 0..20 {
            let key = rng.gen_range(0..self.persons.len());
            if self.persons[key].current_status() == Status::Resident {
                target = Some(key);
                break;
            }
        }
        let Some(key) = target else { return };
        let id = self.persons[key].id().to_string();
        match kind {
            "move" => {
                let mut household: Vec<usize> = vec![key];
                if let Some(s) = self.persons[key]
                    .spouse
                    .filter(|s| self.persons[*s].current_status() == Status::Resident)
                {
                    household.push(s);
                }
                for c in self.persons[key].children.clone() {
                    if self.persons[c].is_minor()
                        && self.persons[c].current_status() == Status::Resident
                    {
                        household.push(c);
                    }
                }
                let address = Self::random_address(&mut rng, at.date_naive());
                for p in household {
                    if self.persons[p].address().is_none()
                        && self.persons[p].current_grading() != Grading::StrengtFortrolig
                    {
                        continue;
                    }
                    self.persons[p].addresses.push(Version {
                        value: Some(address.clone()),
                        valid_from: at,
                    });
                    self.persons[p].updated = at;
                    let pid = self.persons[p].id().to_string();
                    self.push_event(p, pid, "endringIBostedsadresse", at);
                }
            }
            "name" => {
                let mut name = self.persons[key].name().clone();
                name.family = NOUNS[rng.gen_range(0..NOUNS.len())].to_string();
                if rng.gen_bool(0.3) {
                    name.middle = Some(NOUNS[rng.gen_range(0..NOUNS.len())].to_string());
                }
                self.persons[key].names.push(Version {
                    value: name,
                    valid_from: at,
                });
                self.persons[key].updated = at;
                self.push_event(key, id, "endringINavn", at);
            }
            "death" => {
                self.set_deceased(key, at.date_naive(), at);
                self.push_event(key, id, "personErDoed", at);
                if self.contacts[key].status != KrrStatus::NotRegistered {
                    self.contacts[key] = Contact {
                        status: KrrStatus::Deleted,
                        ..Contact::not_registered(at)
                    };
                    self.push_krr_change(key);
                }
                // Parental responsibility of minor children changes with a death.
                for c in self.persons[key].children.clone() {
                    if self.persons[c].is_minor()
                        && self.persons[c].current_status() != Status::Deceased
                    {
                        let cid = self.persons[c].id().to_string();
                        self.push_event(c, cid, "endringIForeldreansvar", at);
                    }
                }
                if let Some(s) = self.persons[key].spouse {
                    let sid = self.persons[s].id().to_string();
                    self.push_event(s, sid, "endringISivilstand", at);
                }
            }
            "emigration" => {
                self.set_emigrated(key, at);
                self.push_event(key, id, "personErUtflyttet", at);
            }
            "protection" => {
                let grading = if rng.gen_bool(0.5) {
                    Grading::Fortrolig
                } else {
                    Grading::StrengtFortrolig
                };
                self.persons[key].grading.push(Version {
                    value: grading,
                    valid_from: at,
                });
                self.persons[key].updated = at;
                self.push_event(key, id, "endringIAdressebeskyttelse", at);
            }
            "birth" => {
                let person = &self.persons[key];
                let adult = !person.is_minor();
                let Some(spouse) = person.spouse.filter(|_| adult) else {
                    self.persons[key].updated = at;
                    self.push_event(key, id, "personErOppdatert", at);
                    return;
                };
                let family = person.name().family.clone();
                let address = person.address().cloned();
                let grading = person.current_grading();
                let gender = if rng.gen_bool(0.5) {
                    Gender::Female
                } else {
                    Gender::Male
                };
                let birth = at.date_naive();
                let id_new = self.new_id(&mut rng, birth, gender, false);
                let name = Self::random_name(&mut rng, &family);
                let child = self.push_person(
                    vec![id_new.clone()],
                    name,
                    birth,
                    gender,
                    address,
                    grading,
                    vec!["NOR"],
                    at,
                );
                self.contacts.push(Contact::not_registered(at));
                self.link_child(child, &[key, spouse]);
                self.push_event(child, id_new, "personErOpprettet", at);
                for parent in [key, spouse] {
                    self.persons[parent].updated = at;
                    let pid = self.persons[parent].id().to_string();
                    self.push_event(parent, pid, "endringIFamilierelasjon", at);
                }
            }
            "id-change" => {
                // A D-number holder gets a fødselsnummer; others get a
                // personErOppdatert (nothing visible changes).
                let person = &self.persons[key];
                let is_d = person.id().starts_with(|c: char| c >= '4');
                if !is_d {
                    self.persons[key].updated = at;
                    self.push_event(key, id, "personErOppdatert", at);
                    return;
                }
                let (birth, gender) = (person.birth, person.gender);
                let new_id = self.new_id(&mut rng, birth, gender, false);
                self.persons[key].ids.push(new_id.clone());
                self.persons[key].updated = at;
                self.push_event(key, new_id, "endringIIdentifikasjonsnummer", at);
                if self.contacts[key].status != KrrStatus::NotRegistered {
                    self.push_krr_change(key);
                }
                // Relatives' documents name the person by the new ID.
                let relatives: Vec<usize> = {
                    let p = &self.persons[key];
                    p.children
                        .iter()
                        .copied()
                        .chain(p.mother)
                        .chain(p.father)
                        .chain(p.spouse)
                        .collect()
                };
                for r in relatives {
                    self.persons[r].updated = at;
                    let rid = self.persons[r].id().to_string();
                    self.push_event(r, rid, "endringIFamilierelasjon", at);
                }
            }
            "marriage" => {
                let person = &self.persons[key];
                if person.spouse.is_some() || person.is_minor() {
                    self.persons[key].updated = at;
                    self.push_event(key, id, "personErOppdatert", at);
                    return;
                }
                // Marry the next unmarried adult resident of another family.
                let partner = (1..self.persons.len())
                    .map(|d| (key + d) % self.persons.len())
                    .find(|&o| {
                        let p = &self.persons[o];
                        p.spouse.is_none()
                            && !p.is_minor()
                            && p.current_status() == Status::Resident
                            && p.gender != self.persons[key].gender
                    });
                let Some(partner) = partner else { return };
                self.marry(key, partner, at);
                for p in [key, partner] {
                    self.persons[p].updated = at;
                    let pid = self.persons[p].id().to_string();
                    self.push_event(p, pid, "endringISivilstand", at);
                }
            }
            "contact" => {
                // A change in KRR only; Folkeregisteret does not see it.
                let contact = &mut self.contacts[key];
                if contact.status != KrrStatus::Active {
                    return;
                }
                match rng.gen_range(0..4) {
                    0 => contact.reserved = !contact.reserved,
                    1 => contact.mobile = Some(format!("+479{:07}", rng.gen_range(0..10_000_000))),
                    _ => {
                        contact.email =
                            Some(contact_email(self.persons[key].name(), key, index + 1))
                    }
                }
                contact.updated = at;
                contact.verified = at;
                self.push_krr_change(key);
            }
            _ => {
                self.persons[key].updated = at;
                self.push_event(key, id, "personErOppdatert", at);
            }
        }
    }

    /// Finds a person by any of their IDs.
    pub fn find(&self, id: &str) -> Option<&Person> {
        self.persons.iter().find(|p| p.ids.iter().any(|i| i == id))
    }

    /// Index of every ID to its person.
    pub fn index(&self) -> BTreeMap<String, usize> {
        let mut map = BTreeMap::new();
        for p in &self.persons {
            for id in &p.ids {
                map.insert(id.clone(), p.key);
            }
        }
        map
    }

    /// The ground truth: every person's IDs and the canonical values a
    /// correct merge of Folkeregisteret data must produce.
    ///
    /// Norwegians first (with the foreign IDs and the Swedish or Finnish
    /// fields Folkeregisteret and KRR do not give, since the Norwegian
    /// registers rank first), then the Swedes and Finns known only there.
    pub fn truth(&self) -> Vec<Truth> {
        self.truth_for(REGISTERS)
    }

    /// The ground truth when only `registers` (of [`REGISTERS`]) are synced.
    pub fn truth_for(&self, registers: &[&str]) -> Vec<Truth> {
        let has = |r: &str| registers.contains(&r);
        let mut out: Vec<Truth> = Vec::new();
        let mut index: BTreeMap<usize, usize> = BTreeMap::new();
        if has("folkeregister") || has("krr") || has("kartverket") {
            for p in &self.persons {
                index.insert(p.key, out.len());
                out.push(self.truth_of(p, registers));
            }
        }
        let add = |norwegian: Option<usize>,
                   ids: &[String],
                   fields: BTreeMap<String, Value>,
                   out: &mut Vec<Truth>| {
            match norwegian.and_then(|no| index.get(&no)) {
                Some(at) => merge_into(&mut out[*at], ids, fields),
                None => out.push(Truth {
                    ids: ids.to_vec(),
                    fields,
                }),
            }
        };
        if has("spar") {
            for se in &self.swedes {
                // SPAR answers for a protected person with the ID in use
                // and the markers only: no Hanvisning names the earlier one.
                let ids = if se.is_protected() {
                    &se.ids[se.ids.len().saturating_sub(1)..]
                } else {
                    &se.ids[..]
                };
                add(se.norwegian, ids, self.se_fields(se), &mut out);
            }
        }
        if has("dvv") {
            for fi in &self.finns {
                add(fi.norwegian, &fi.ids, self.fi_fields(fi), &mut out);
            }
        }
        out
    }

    fn truth_of(&self, p: &Person, registers: &[&str]) -> Truth {
        let mut fields = BTreeMap::new();
        let freg = registers.contains(&"folkeregister");
        if freg {
            self.freg_truth(p, &mut fields);
        }
        if registers.contains(&"kartverket")
            && p.current_grading() != Grading::StrengtFortrolig
            && let Some(a) = p.address()
        {
            if let Some((lat, lon)) = crate::kartverket::point(a) {
                fields.insert(
                    "address.coordinates".into(),
                    json!({"lat": lat, "lon": lon, "epsg": "EPSG:4258"}),
                );
            }
            if !matches!(a.kind, AddressKind::Unknown)
                && let Some((code, _)) =
                    crate::kartverket::district(a.municipality, a.statistical_unit)
            {
                fields.insert("address.district".into(), json!(code));
            }
        }
        let contact = &self.contacts[p.key];
        if registers.contains(&"krr") && contact.status == KrrStatus::Active {
            fields.insert("contact.reservation".into(), json!(contact.reserved));
            let status = if contact.can_notify() {
                "can-notify"
            } else {
                "cannot-notify"
            };
            fields.insert("contact.notification-status".into(), json!(status));
            if let Some(e) = &contact.email {
                fields.insert("contact.email".into(), json!(e));
            }
            if let Some(m) = &contact.mobile {
                fields.insert("contact.mobile".into(), json!(m));
            }
            if let Some((address, provider)) = &contact.mailbox {
                fields.insert("contact.digital-mailbox".into(), json!(address));
                fields.insert("contact.digital-mailbox-provider".into(), json!(provider));
            }
            fields.insert("language.preferred".into(), json!(contact.language));
        }
        let mut ids = p.ids.clone();
        if freg && let Some(foreign) = self.foreign_ids.get(&p.key) {
            // Folkeregisteret names the IDs other countries gave the person.
            let mut all: Vec<String> = foreign.iter().map(|(_, id)| id.clone()).collect();
            all.append(&mut ids);
            ids = all;
        }
        Truth { ids, fields }
    }

    /// What Folkeregisteret says about a person, in catalogue form.
    fn freg_truth(&self, p: &Person, fields: &mut BTreeMap<String, Value>) {
        let name = p.name();
        fields.insert("name.given".to_string(), json!(name.given));
        if let Some(m) = &name.middle {
            fields.insert("name.middle".into(), json!(m));
        }
        fields.insert("name.family".into(), json!(name.family));
        fields.insert("birth.date".into(), json!(p.birth.to_string()));
        fields.insert(
            "birth.country".into(),
            json!(if p.citizenship[0] == "NOR" {
                "NOR"
            } else {
                p.citizenship[0]
            }),
        );
        fields.insert(
            "gender".into(),
            json!(match p.gender {
                Gender::Female => "female",
                Gender::Male => "male",
            }),
        );
        fields.insert(
            "status".into(),
            json!(match p.current_status() {
                Status::Resident => "resident",
                Status::Emigrated => "emigrated",
                Status::Deceased => "deceased",
            }),
        );
        if let Some(d) = p.death {
            fields.insert("death.date".into(), json!(d.to_string()));
        }
        fields.insert(
            "civil-status".into(),
            json!(match p.current_civil() {
                Civil::Unmarried => "unmarried",
                Civil::Married => "married",
                Civil::Widowed => "widowed",
                Civil::Divorced => "divorced",
            }),
        );
        let mut citizenship: Vec<&str> = p.citizenship.clone();
        citizenship.sort();
        fields.insert("citizenship".into(), json!(citizenship));
        let grading = p.current_grading();
        if grading != Grading::Ugradert {
            fields.insert("protection.level".into(), json!(grading_label(grading)));
        }
        if grading != Grading::StrengtFortrolig
            && let Some(a) = p.address()
        {
            fields.insert("address.residential".into(), canonical_address(a));
            fields.insert("address.municipality".into(), json!(a.municipality));
            if !matches!(a.kind, AddressKind::Unknown) {
                fields.insert(
                    "address.statistical-unit".into(),
                    json!(format!("{}{:04}", a.municipality, a.statistical_unit)),
                );
            }
        }
        if grading != Grading::StrengtFortrolig {
            if let Some((home, _)) = crate::freg::shared_residence(self, p) {
                fields.insert("address.shared-residence".into(), canonical_address(home));
            }
            if let Some((box_number, a)) = crate::freg::postal_box(p) {
                fields.insert(
                    "address.postal".into(),
                    json!({"kind": "postal", "lines": [box_number], "postal_code": a.postal_code, "city": a.city, "country": "NOR"}),
                );
            }
        }
        let family = self.family_relations(p);
        if !family.is_empty() {
            fields.insert("relations.family".into(), Value::Array(family));
        }
        let custody = self.parental_responsibility(p);
        if !custody.is_empty() {
            fields.insert(
                "relations.parental-responsibility".into(),
                Value::Array(custody),
            );
        }
    }

    /// Family relations as the canonical sorted list.
    pub fn family_relations(&self, p: &Person) -> Vec<Value> {
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(m) = p.mother {
            out.push(("mother".into(), self.persons[m].id().to_string()));
        }
        if let Some(f) = p.father {
            out.push(("father".into(), self.persons[f].id().to_string()));
        }
        for c in &p.children {
            out.push(("child".into(), self.persons[*c].id().to_string()));
        }
        if let Some(s) = p.spouse.filter(|_| p.current_civil() == Civil::Married) {
            out.push(("spouse".into(), self.persons[s].id().to_string()));
        }
        out.sort();
        out.into_iter()
            .map(|(role, id)| json!({"role": role, "id": id}))
            .collect()
    }

    /// Parental responsibility of a minor: `joint` with each living parent
    /// when both live, otherwise the living parent alone.
    pub fn parental_responsibility(&self, p: &Person) -> Vec<Value> {
        if !p.is_minor() || p.current_status() == Status::Deceased {
            return vec![];
        }
        let living: Vec<usize> = p
            .mother
            .into_iter()
            .chain(p.father)
            .filter(|k| self.persons[*k].current_status() != Status::Deceased)
            .collect();
        let mut out: Vec<(String, String)> = match living.as_slice() {
            [a, b] => vec![
                ("joint".to_string(), self.persons[*a].id().to_string()),
                ("joint".to_string(), self.persons[*b].id().to_string()),
            ],
            [one] => vec![(
                match self.persons[*one].gender {
                    Gender::Female => "mother",
                    Gender::Male => "father",
                }
                .to_string(),
                self.persons[*one].id().to_string(),
            )],
            _ => vec![],
        };
        out.sort();
        out.into_iter()
            .map(|(role, id)| json!({"role": role, "id": id}))
            .collect()
    }
}

/// The registers the simulator serves.
pub const REGISTERS: &[&str] = &["folkeregister", "krr", "kartverket", "spar", "dvv"];

/// Adds a second country's IDs (before the Norwegian ones, which stay
/// last) and the fields the Norwegian registers did not give.
fn merge_into(truth: &mut Truth, ids: &[String], fields: BTreeMap<String, Value>) {
    let mut all: Vec<String> = ids
        .iter()
        .filter(|i| !truth.ids.contains(i))
        .cloned()
        .collect();
    all.append(&mut truth.ids);
    truth.ids = all;
    for (k, v) in fields {
        truth.fields.entry(k).or_insert(v);
    }
}

/// Letters a mail address can hold.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'Æ' | 'æ' => 'a',
            'Ø' | 'ø' => 'o',
            'Å' | 'å' => 'a',
            c => c,
        })
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn contact_email(name: &Name, key: usize, variant: u64) -> String {
    let base = format!("{}.{}", ascii(&name.given), ascii(&name.family)).to_lowercase();
    if variant == 0 {
        format!("{base}.{key}@example.invalid")
    } else {
        format!("{base}.{key}.{variant}@example.invalid")
    }
}

pub fn grading_label(g: Grading) -> &'static str {
    match g {
        Grading::Ugradert => "UGRADERT",
        Grading::Klientadresse => "KLIENTADRESSE",
        Grading::Fortrolig => "FORTROLIG",
        Grading::StrengtFortrolig => "STRENGT_FORTROLIG",
    }
}

/// The canonical address object of docs/fields.md.
pub fn canonical_address(a: &Address) -> Value {
    let mut map = serde_json::Map::new();
    match &a.kind {
        AddressKind::Street {
            street,
            number,
            letter,
            ..
        } => {
            map.insert("kind".into(), json!("street"));
            map.insert("street".into(), json!(street));
            map.insert("house_number".into(), json!(number.to_string()));
            if let Some(l) = letter {
                map.insert("house_letter".into(), json!(l.to_string()));
            }
        }
        AddressKind::Cadastral { farm, holding } => {
            map.insert("kind".into(), json!("cadastral"));
            map.insert("farm".into(), json!(farm.to_string()));
            map.insert("holding".into(), json!(holding.to_string()));
        }
        AddressKind::Unknown => {
            map.insert("kind".into(), json!("unknown"));
            map.insert("municipality".into(), json!(a.municipality));
            map.insert("country".into(), json!("NOR"));
            return Value::Object(map);
        }
    }
    if let Some(u) = &a.unit {
        map.insert("unit".into(), json!(u));
    }
    map.insert("postal_code".into(), json!(a.postal_code));
    map.insert("city".into(), json!(a.city));
    map.insert("municipality".into(), json!(a.municipality));
    map.insert("country".into(), json!("NOR"));
    Value::Object(map)
}

/// One line of `folkhub-sim population`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Truth {
    /// Every ID the person has had; the last is in use.
    pub ids: Vec<String>,
    pub fields: BTreeMap<String, Value>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid() {
        let a = Population::generate(7, 300);
        let b = Population::generate(7, 300);
        assert_eq!(a.truth(), b.truth());
        for p in &a.persons {
            for id in &p.ids {
                ids::parse_norwegian(id).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let mut c = a.clone();
        c.advance(200);
        let mut d = b.clone();
        d.advance(200);
        assert_eq!(c.truth(), d.truth());
        assert!(c.events.len() > a.events.len());
        assert!(
            a.persons
                .iter()
                .any(|p| p.current_grading() == Grading::Fortrolig)
        );
        assert!(
            a.persons
                .iter()
                .any(|p| p.ids[0].starts_with(|ch: char| ch >= '4'))
        );
    }
}
