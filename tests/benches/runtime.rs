//! Runtime benchmarks (DESIGN §11), reported in docs/benchmarks.md:
//! - a fresh Store + instance + one `lookup-batch` call, no HTTP;
//! - mapping 1,000 persons' register answers inside wasm versus the same
//!   mapping compiled natively, for each of the five connectors;
//! - loading a precompiled component versus compiling it.
//!
//! Run with `cargo xtask bench` (builds the components first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use folkhub_core::contract::{FoundPerson, LookupOutcome};
use folkhub_core::observation::{Observation, SourceId};
use folkhub_runtime::{ConnectorSettings, Limits, Runtime};
use folkhub_sim::freg::{Parts, document};
use folkhub_sim::population::Population;

const SEPARATOR: &str = "\u{1e}";

/// Register answers for 1,000 synthetic persons, as each register sends
/// them: one bulkoppslag (Folkeregisteret), one personer answer (KRR), and
/// one answer per person for the registers that take one question per call
/// (SPAR, VTJ, Kartverket's sok).
fn bodies() -> Vec<(&'static str, String)> {
    use folkhub_sim::{dvv, kartverket, krr, spar};
    let population = Population::generate(42, 4000);
    let norwegians = &population.persons[..1000];
    let parts = Parts { relations: true };
    let oppslag: Vec<serde_json::Value> = norwegians
        .iter()
        .map(|p| serde_json::json!({"foedselsEllerDNummer": p.id(), "folkeregisterperson": document(&population, p, parts)}))
        .collect();
    let freg = serde_json::json!({ "oppslag": oppslag }).to_string();
    let personer: Vec<serde_json::Value> = norwegians
        .iter()
        .map(|p| krr::person(p.id(), Some(&population.contacts[p.key]), (true, true)))
        .collect();
    let krr_body = serde_json::json!({ "personer": personer }).to_string();
    let spar_body: Vec<String> = population.swedes[..1000]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            spar::answer_with(
                connector_spar::mapping::UPSTREAM_VERSION,
                spar::Style::Prefixes(i as u64),
                spar::Content::Posts(&population, vec![p]),
                spar::Extended {
                    relations: true,
                    citizenship: true,
                },
                i as u64,
            )
        })
        .collect();
    let dvv_body: Vec<String> = population.finns[..1000]
        .iter()
        .map(|p| {
            let product = "Perussanoma 3";
            dvv::answer(
                product,
                "0000",
                "Haku onnistui",
                p.id(),
                Some(dvv::henkilo(&population, p, product)),
            )
        })
        .collect();
    let mut kartverket_body = vec![kartverket::correspondence().to_string()];
    let located = population
        .persons
        .iter()
        .filter_map(|p| p.address())
        .filter_map(|a| Some((a, kartverket::point(a)?)))
        .take(1000);
    for (p, (lat, lon)) in located {
        let mut address = folkhub_sim::population::canonical_address(p);
        address["_statistical_unit"] =
            serde_json::json!(format!("{}{:04}", p.municipality, p.statistical_unit));
        let entry = kartverket::Entry {
            address: p.clone(),
            lat,
            lon,
        };
        let answer = serde_json::json!({"metadata": {"totaltAntallTreff": 1}, "adresser": [kartverket::document(&entry, None)]});
        kartverket_body.push(address.to_string());
        kartverket_body.push(answer.to_string());
    }
    vec![
        ("folkeregister", freg),
        ("krr", krr_body),
        ("spar", spar_body.join(SEPARATOR)),
        ("dvv", dvv_body.join(SEPARATOR)),
        ("kartverket", kartverket_body.join(SEPARATOR)),
    ]
}

/// The host's side of the boundary: values travel as JSON text and become
/// core observations.
fn to_core(
    ids: Vec<(String, String, bool)>,
    fields: Vec<(String, serde_json::Value, Vec<String>)>,
) -> FoundPerson {
    FoundPerson {
        ids: ids
            .into_iter()
            .map(|(scheme, value, active)| SourceId {
                scheme,
                value,
                active,
            })
            .collect(),
        fields: fields
            .into_iter()
            .map(|(path, value, labels)| Observation {
                path,
                value: serde_json::from_str(&value.to_string()).unwrap(),
                labels,
                effective: None,
            })
            .collect(),
        upstream_version: "v1".into(),
        covers: None,
    }
}

fn from_sdk(p: folkhub_connector_sdk::MappedPerson) -> FoundPerson {
    to_core(
        p.ids,
        p.fields
            .into_iter()
            .map(|f| (f.path.to_string(), f.value, f.labels))
            .collect(),
    )
}

/// The native twin of the wasm path: parse, map, and convert to the core
/// types the host stores (the wasm path ends in the same types).
fn native_mapping(register: &str, body: &str) -> usize {
    let mut found: Vec<FoundPerson> = Vec::new();
    let mut warnings = Vec::new();
    match register {
        "folkeregister" => {
            use connector_folkeregister::mapping;
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            for (_, outcome) in mapping::map_bulk(&json, true, &mut warnings).unwrap() {
                if let mapping::Outcome::Found(p) = outcome {
                    found.push(to_core(
                        p.ids,
                        p.fields
                            .into_iter()
                            .map(|f| (f.path.to_string(), f.value, f.labels))
                            .collect(),
                    ));
                }
            }
        }
        "krr" => {
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            for p in connector_krr::mapping::map_persons(&json, None).unwrap() {
                let ids = vec![("no-fnr".to_string(), p.id.clone(), true)];
                found.push(to_core(
                    ids,
                    p.fields
                        .into_iter()
                        .map(|(path, value, _)| (path.to_string(), value, vec![]))
                        .collect(),
                ));
            }
        }
        "spar" => {
            for answer in body.split(SEPARATOR) {
                if let connector_spar::mapping::Outcome::Found(p) =
                    connector_spar::mapping::map_answer(
                        answer,
                        "",
                        connector_spar::mapping::Asked {
                            relations: true,
                            citizenship: true,
                        },
                        &mut warnings,
                    )
                    .unwrap()
                {
                    found.push(from_sdk(p));
                }
            }
        }
        "dvv" => {
            for answer in body.split(SEPARATOR) {
                if let connector_dvv::mapping::Outcome::Found(p) =
                    connector_dvv::mapping::map_answer(answer, "", "20261203", &mut warnings)
                        .unwrap()
                {
                    found.push(from_sdk(p));
                }
            }
        }
        "kartverket" => {
            use connector_kartverket::mapping;
            let mut parts = body.split(SEPARATOR);
            let districts =
                mapping::districts(&serde_json::from_str(parts.next().unwrap()).unwrap()).unwrap();
            while let (Some(address), Some(answer)) = (parts.next(), parts.next()) {
                let address: serde_json::Value = serde_json::from_str(address).unwrap();
                let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
                if let Some(point) = mapping::pick(&answer, &address).unwrap() {
                    let unit = address.get("_statistical_unit").and_then(|u| u.as_str());
                    let person = folkhub_connector_sdk::MappedPerson {
                        fields: mapping::fields(point, unit, &districts),
                        ..Default::default()
                    };
                    found.push(from_sdk(person));
                }
            }
        }
        other => panic!("unknown register {other}"),
    }
    found.len()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(None, Limits::default()).unwrap();

    let quick = folkhub_tests::component("loop");
    let connector = runtime
        .prepare(
            &folkhub_tests::test_release("loop", &quick, "1.1.0"),
            &quick,
            ConnectorSettings::default(),
        )
        .unwrap();
    let ids = vec!["quick".to_string()];
    c.bench_function(
        "fresh instance + lookup-batch (small component, no HTTP)",
        |b| b.iter(|| rt.block_on(connector.lookup(&ids)).unwrap()),
    );

    let unpooled = Runtime::new(
        None,
        Limits {
            pooling: false,
            ..Limits::default()
        },
    )
    .unwrap();
    let unpooled_connector = unpooled
        .prepare(
            &folkhub_tests::test_release("loop", &quick, "1.1.0"),
            &quick,
            ConnectorSettings::default(),
        )
        .unwrap();
    c.bench_function(
        "fresh instance + lookup-batch (small component, no HTTP, without pooling)",
        |b| b.iter(|| rt.block_on(unpooled_connector.lookup(&ids)).unwrap()),
    );

    // Again, in the other order: a pair alone is sensitive to its order.
    c.bench_function(
        "fresh instance + lookup-batch (small component, no HTTP, without pooling, again)",
        |b| b.iter(|| rt.block_on(unpooled_connector.lookup(&ids)).unwrap()),
    );
    c.bench_function(
        "fresh instance + lookup-batch (small component, no HTTP, again)",
        |b| b.iter(|| rt.block_on(connector.lookup(&ids)).unwrap()),
    );

    let manifest =
        folkhub_manifest::Manifest::load(&folkhub_tests::root().join("registry-manifest.toml"))
            .unwrap();
    let freg = manifest.find("folkeregister", None).unwrap();
    let freg_connector = runtime
        .prepare(
            freg,
            &manifest.artifact_path(freg),
            ConnectorSettings::default(),
        )
        .unwrap();
    c.bench_function("fresh instance + describe (folkeregister component)", |b| {
        b.iter(|| rt.block_on(freg_connector.describe()).unwrap())
    });

    let bench_path = folkhub_tests::component("mapping-bench");
    let mapper = runtime
        .prepare(
            &folkhub_tests::test_release("mapping-bench", &bench_path, "1.1.0"),
            &bench_path,
            ConnectorSettings::default(),
        )
        .unwrap();
    for (register, body) in bodies() {
        let input = vec![register.to_string(), body.clone()];
        let check = rt.block_on(mapper.lookup(&input)).unwrap();
        let mapped = check
            .iter()
            .filter(|r| matches!(r.outcome, LookupOutcome::Found(_)))
            .count();
        assert_eq!(mapped, native_mapping(register, &body), "{register}");
        assert!(mapped >= 990, "{register}: {mapped} mapped");
        let mut group = c.benchmark_group(format!("map 1000 {register} answers"));
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(6));
        group.bench_function("wasm (incl. instance, copy in/out, conversion)", |b| {
            b.iter(|| rt.block_on(mapper.lookup(&input)).unwrap())
        });
        group.bench_function("native", |b| b.iter(|| native_mapping(register, &body)));
        let discard = vec![register.to_string(), body.clone(), "discard".to_string()];
        group.bench_function("wasm, results not copied out (guest work only)", |b| {
            b.iter(|| rt.block_on(mapper.lookup(&discard)).unwrap())
        });
        group.finish();
    }

    let wasm = std::fs::read(manifest.artifact_path(freg)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cached_runtime = Runtime::new(Some(cache.path().to_path_buf()), Limits::default()).unwrap();
    cached_runtime
        .component("folkeregister", "1.0.0", &wasm, &freg.sha256)
        .unwrap();
    let mut group = c.benchmark_group("load folkeregister component");
    group.sample_size(10);
    group.bench_function("compile (Cranelift)", |b| {
        b.iter(|| {
            runtime
                .component("folkeregister", "1.0.0", &wasm, &freg.sha256)
                .unwrap()
        })
    });
    group.bench_function("precompiled (cache)", |b| {
        b.iter(|| {
            cached_runtime
                .component("folkeregister", "1.0.0", &wasm, &freg.sha256)
                .unwrap()
        })
    });
    group.finish();
}

/// 1,000 Folkeregisteret persons as the host stores them.
fn freg_persons() -> Vec<FoundPerson> {
    let (_, body) = bodies()
        .into_iter()
        .find(|(r, _)| *r == "folkeregister")
        .unwrap();
    use connector_folkeregister::mapping;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut warnings = Vec::new();
    mapping::map_bulk(&json, true, &mut warnings)
        .unwrap()
        .into_iter()
        .filter_map(|(_, outcome)| match outcome {
            mapping::Outcome::Found(p) => Some(to_core(
                p.ids,
                p.fields
                    .into_iter()
                    .map(|f| (f.path.to_string(), f.value, f.labels))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

fn batch(persons: &[FoundPerson], at: chrono::DateTime<chrono::Utc>) -> folkhub_store::Batch {
    folkhub_store::Batch {
        source: "folkeregister".into(),
        release: "1.0.1".into(),
        retrieved: at,
        persons: persons.to_vec(),
        cursor: Some("1".into()),
        reason: "bench".into(),
        fence: Default::default(),
    }
}

/// The store's side of a sync (DESIGN §8): applying register answers to
/// SQLite, new persons (a first full sync or a feed of new persons) and a
/// refresh that changes nothing; in batches of 500 as the sync writes them.
fn store_benches(c: &mut Criterion) {
    use folkhub_store::prelude::*;
    use folkhub_store::sql::SqlStore;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let persons = freg_persons();
    assert_eq!(persons.len(), 1000);
    let mut group = c.benchmark_group("store: apply 1,000 Folkeregisteret persons (2 batches)");
    group.sample_size(10);
    group.bench_function("new persons (fresh store)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let store = rt
                    .block_on(SqlStore::open(&dir.path().join("b.db"), Default::default()))
                    .unwrap();
                let started = std::time::Instant::now();
                for chunk in persons.chunks(500) {
                    rt.block_on(store.apply(batch(chunk, chrono::Utc::now())))
                        .unwrap();
                }
                total += started.elapsed();
            }
            total
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqlStore::open(&dir.path().join("u.db"), Default::default()))
        .unwrap();
    for chunk in persons.chunks(500) {
        rt.block_on(store.apply(batch(chunk, chrono::Utc::now())))
            .unwrap();
    }
    group.bench_function("unchanged persons (a refresh that changes nothing)", |b| {
        b.iter(|| {
            for chunk in persons.chunks(500) {
                let report = rt
                    .block_on(store.apply(batch(chunk, chrono::Utc::now())))
                    .unwrap();
                assert_eq!(report.persons_unchanged, 500);
            }
        })
    });
    group.finish();
}

criterion_group!(runtime_benches, benches, store_benches);
criterion_main!(runtime_benches);
