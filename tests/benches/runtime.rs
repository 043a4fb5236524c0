//! Runtime benchmarks (DESIGN §11), reported in docs/benchmarks.md:
//! - a fresh Store + instance + one `lookup-batch` call, no HTTP;
//! - mapping 1,000 Folkeregisteret person documents inside wasm versus the
//!   same mapping compiled natively;
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

/// A bulkoppslag answer for 1,000 synthetic persons.
fn bulk_body() -> String {
    let population = Population::generate(42, 1000);
    let parts = Parts { relations: true };
    let oppslag: Vec<serde_json::Value> = population
        .persons
        .iter()
        .map(|p| serde_json::json!({"foedselsEllerDNummer": p.id(), "folkeregisterperson": document(&population, p, parts)}))
        .collect();
    serde_json::json!({ "oppslag": oppslag }).to_string()
}

/// The native twin of the wasm path: parse, map, and convert to the core
/// types the host stores (the wasm path ends in the same types).
fn native_mapping(body: &str) -> usize {
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    let mut warnings = Vec::new();
    let mapped = connector_folkeregister::mapping::map_bulk(&json, &mut warnings).unwrap();
    let mut found = 0;
    for (_, outcome) in mapped {
        if let connector_folkeregister::mapping::Outcome::Found(p) = outcome {
            // Same boundary work as the host does: values travel as JSON text.
            let person = FoundPerson {
                ids: p
                    .ids
                    .into_iter()
                    .map(|(scheme, value, active)| SourceId {
                        scheme,
                        value,
                        active,
                    })
                    .collect(),
                fields: p
                    .fields
                    .into_iter()
                    .map(|f| Observation {
                        path: f.path.to_string(),
                        value: serde_json::from_str(&f.value.to_string()).unwrap(),
                        labels: f.labels,
                        effective: None,
                    })
                    .collect(),
                upstream_version: "v1".into(),
            };
            found += usize::from(!person.fields.is_empty());
        }
    }
    found
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

    let body = bulk_body();
    let bench_path = folkhub_tests::component("mapping-bench");
    let mapper = runtime
        .prepare(
            &folkhub_tests::test_release("mapping-bench", &bench_path, "1.1.0"),
            &bench_path,
            ConnectorSettings::default(),
        )
        .unwrap();
    let input = vec![body.clone()];
    let check = rt.block_on(mapper.lookup(&input)).unwrap();
    assert_eq!(
        check
            .iter()
            .filter(|r| matches!(r.outcome, LookupOutcome::Found(_)))
            .count(),
        1000
    );
    assert_eq!(native_mapping(&body), 1000);
    let mut group = c.benchmark_group("map 1000 Folkeregisteret documents");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("wasm (incl. instance, copy in/out, conversion)", |b| {
        b.iter(|| rt.block_on(mapper.lookup(&input)).unwrap())
    });
    group.bench_function("native", |b| b.iter(|| native_mapping(&body)));
    let discard = vec![body.clone(), "discard".to_string()];
    group.bench_function("wasm, results not copied out (guest work only)", |b| {
        b.iter(|| rt.block_on(mapper.lookup(&discard)).unwrap())
    });
    group.finish();

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

criterion_group!(runtime_benches, benches);
criterion_main!(runtime_benches);
