//! `cargo xtask demo | test | build-connectors | bench | bench-api | bench-bulk | docs | fuzz`.
//!
//! The two commands of the README: `demo` builds the connectors, starts the
//! simulator and the host on SQLite, syncs and serves; `test` installs what
//! the tests need and runs the whole suite.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build connectors, start the simulator and the host, sync, serve.
    Demo {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Port of the simulator.
        #[arg(long, default_value_t = 18081)]
        sim_port: u16,
        /// Keep the store in a local PostgreSQL (a cluster of the demo's
        /// own under data/demo/postgres, on a free loopback port, stopped
        /// when the demo ends) instead of SQLite.
        #[arg(long)]
        postgres: bool,
    },
    /// Install test prerequisites, build, and run the whole test suite.
    Test,
    /// Write the contract package a vendor builds against: the connector
    /// WIT, worlds that import wasi:http, and the WASI 0.2 WIT this host
    /// links, taken from the wasmtime-wasi-http crate it is built with.
    ContractPackage {
        /// Where to write it (default: target/contract/folkhub-connector-<version>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build the example connectors in other languages (Python, with
    /// componentize-py from PyPI) into target/examples/.
    BuildExamples,
    /// Build every connector and test component for wasm32-wasip2.
    BuildConnectors {
        /// Copy built connectors into registry/artifacts and update their
        /// sha256 in registry-manifest.toml (for a new release version).
        #[arg(long)]
        publish: bool,
    },
    /// Run the benchmarks.
    Bench,
    /// Load-test person reads over loopback with wrk (installed from
    /// Debian's packages if missing): alone, during a full refresh, and
    /// batches of 1,000. Release build; prints wrk's reports.
    BenchApi {
        /// Persons in the simulator (Norwegian population).
        #[arg(long, default_value_t = 5000)]
        count: usize,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        #[arg(long, default_value_t = 18090)]
        port: u16,
        #[arg(long, default_value_t = 18091)]
        sim_port: u16,
        /// Serve from PostgreSQL (a throwaway local cluster) instead of SQLite.
        #[arg(long)]
        postgres: bool,
    },
    /// Bulk throughput and footprint: a first sync through the
    /// Folkeregisteret simulator, an unchanged full refresh, a feed of
    /// register changes, bytes on disk per person and peak RSS, each beside
    /// its native floor (the same rows written by a plain sqlx program), at
    /// persons/100, persons/10 and persons. Release build; writes
    /// target/bench-bulk/report.md.
    BenchBulk {
        /// Persons in the largest step.
        #[arg(long, default_value_t = 1_000_000)]
        persons: usize,
        /// Register changes in the feed step.
        #[arg(long, default_value_t = 50_000)]
        changes: u64,
        /// Only the largest step.
        #[arg(long)]
        single: bool,
        #[arg(long, default_value_t = 18190)]
        sim_port: u16,
        /// The store on PostgreSQL (a throwaway local cluster) instead of
        /// SQLite; the floor is then not run.
        #[arg(long)]
        postgres: bool,
    },
    /// Regenerate docs/fields.md from the field catalogue.
    Docs,
    /// Fuzz the ID readers and every connector's mapping (cargo-fuzz,
    /// libFuzzer, `-s none` so stable Rust does): each target for
    /// `--seconds`, seeded from tests/fixtures. A bench command, not part
    /// of `test`; installs cargo-fuzz when missing.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Targets (default: all): ids, spar, vtj, folkeregister, krr, kartverket.
        targets: Vec<String>,
    },
}

/// Connector crates: (connector id, crate name, wasm file stem).
const CONNECTORS: &[(&str, &str)] = &[
    ("folkeregister", "connector-folkeregister"),
    ("krr", "connector-krr"),
    ("spar", "connector-spar"),
    ("dvv", "connector-dvv"),
    ("kartverket", "connector-kartverket"),
];
/// Releases built from a connector's source with a feature, as a version
/// of their own (the crate's version is the default build's): one source
/// speaking two upstream versions. (connector id, crate, feature, version)
const VARIANTS: &[(&str, &str, &str, &str)] =
    &[("spar", "connector-spar", "upstream-2021-1", "1.2.0")];
/// Test components (crate names), built beside the connectors.
const TEST_COMPONENTS: &[&str] = &[
    "component-loop",
    "component-memory-bomb",
    "component-denied-http",
    "component-newer-minor",
    "component-retired-major",
    "component-newer-major",
    "component-mapping-bench",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    eprintln!("xtask: {what}");
    let status = command
        .status()
        .with_context(|| format!("starting: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()?;
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && Path::new(&libdir).exists() {
        return Ok(());
    }
    let mut c = Command::new("rustup");
    c.args(["target", "add", "wasm32-wasip2"]);
    run(c, "rustup target add wasm32-wasip2")
}

fn reproducible_flags() -> String {
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    [
        format!("--remap-path-prefix={}=/folkhub", root().display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join("\x1f")
}

fn wasm_dir() -> PathBuf {
    root().join("target/wasm32-wasip2/connector")
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn crate_version(crate_name: &str) -> anyhow::Result<String> {
    let dir = crate_name.strip_prefix("connector-").unwrap_or(crate_name);
    let text = std::fs::read_to_string(root().join("connectors").join(dir).join("Cargo.toml"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(String::from)
        })
        .context("no version in the connector's Cargo.toml")
}

/// Sets the sha256 of one release in the manifest text.
fn set_digest(manifest: &str, connector: &str, version: &str, digest: &str) -> Option<String> {
    let mut out = Vec::new();
    let (mut in_block, mut matches_connector, mut matches_version, mut done) =
        (false, false, false, false);
    let mut block_start = 0;
    for line in manifest.lines() {
        if line.trim() == "[[release]]" {
            in_block = true;
            matches_connector = false;
            matches_version = false;
            block_start = out.len();
        }
        if in_block {
            if line.trim() == format!("connector = \"{connector}\"") {
                matches_connector = true;
            }
            if line.trim() == format!("version = \"{version}\"") {
                matches_version = true;
            }
        }
        out.push(line.to_string());
        if in_block && matches_connector && matches_version && !done {
            for l in out.iter_mut().skip(block_start) {
                if l.trim_start().starts_with("sha256 = ") {
                    *l = format!("sha256 = \"{digest}\"");
                    done = true;
                }
            }
        }
    }
    done.then(|| out.join("\n") + "\n")
}

fn build_connectors(publish: bool) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    // Two invocations: the mapping benchmark component uses a connector as a
    // library without its export glue, and cargo unifies features within one
    // build. Test components go first: building a connector as their
    // dependency also writes its (glue-less) .wasm, which the connector build
    // then replaces with the real one.
    // Each connector builds alone: cargo unifies the SDK's features within
    // one build, and a connector on contract 2 (SDK feature `contract-2`)
    // must not change the bytes of a connector on contract 1.
    let test_components: Vec<&str> = TEST_COMPONENTS.to_vec();
    guest_build("test components", &test_components, None)?;
    let manifest_path = root().join("registry-manifest.toml");
    let mut manifest = std::fs::read_to_string(&manifest_path)?;
    let builds = CONNECTORS
        .iter()
        .map(|(id, krate)| Ok((*id, *krate, None, crate_version(krate)?)))
        .chain(VARIANTS.iter().map(|(id, krate, feature, version)| {
            Ok((*id, *krate, Some(*feature), version.to_string()))
        }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (id, krate, feature, version) in builds {
        guest_build(id, &[krate], feature)?;
        let built = wasm_dir().join(format!("{}.wasm", krate.replace('-', "_")));
        let artifact = root().join(format!("registry/artifacts/{id}-{version}.wasm"));
        let built_digest = sha256_file(&built)?;
        // A published artifact is never overwritten, `--publish` or not:
        // only a release without an artifact yet is written.
        if !artifact.exists() {
            if !publish {
                eprintln!(
                    "xtask: note: {id} {version} is not published yet; run `cargo xtask build-connectors --publish` once its release is in registry-manifest.toml"
                );
                continue;
            }
            std::fs::create_dir_all(artifact.parent().context("artifact dir")?)?;
            std::fs::copy(&built, &artifact)?;
            manifest = set_digest(&manifest, id, &version, &built_digest).with_context(|| {
                format!(
                    "registry-manifest.toml has no release {id} {version}; add it before publishing"
                )
            })?;
            eprintln!(
                "xtask: published {id} {version} sha256 {built_digest}; sign it with the project key: cargo run -p folkhub -- releases sign {id} {version} --publisher folkhub --key $FOLKHUB_PUBLISHER_KEY"
            );
        } else if sha256_file(&artifact)? != built_digest {
            eprintln!(
                "xtask: note: {id} {version} built from source differs from the published artifact; published releases never change — bump the version in connectors/{id}/Cargo.toml, add a release to registry-manifest.toml and run `cargo xtask build-connectors --publish`"
            );
        }
    }
    std::fs::write(&manifest_path, manifest)?;
    Ok(())
}

/// One guest build. Each connector builds alone: cargo unifies the SDK's
/// features within one build, and a connector on one contract must not
/// change the bytes of a connector on another.
fn guest_build(what: &str, crates: &[&str], feature: Option<&str>) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args([
        "build",
        "--target",
        "wasm32-wasip2",
        "--profile",
        "connector",
    ]);
    for krate in crates {
        c.args(["-p", krate]);
    }
    if let Some(feature) = feature {
        c.args(["--features", feature]);
    }
    // An outer cargo must not leak its flags into the guest build, and
    // the checkout and cargo home paths must not end up in the artifact:
    // the same source then gives the same bytes on any machine.
    for var in ["RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        c.env_remove(var);
    }
    c.env("CARGO_ENCODED_RUSTFLAGS", reproducible_flags());
    let features = feature
        .map(|f| format!(" --features {f}"))
        .unwrap_or_default();
    run(
        c,
        &format!("cargo build --target wasm32-wasip2 --profile connector{features} ({what})"),
    )
}

fn apt_install_if_missing(binary: &str, package: &str) {
    if Command::new("sh")
        .args(["-c", &format!("command -v {binary} || ls {binary}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return;
    }
    eprintln!("xtask: installing {package} (for {binary})");
    let sudo = if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    {
        ""
    } else {
        "sudo "
    };
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("{sudo}apt-get update -qq && {sudo}apt-get install -y -qq {package}"),
        ])
        .status();
}

/// The schemathesis release the API test runs (pinned: its checks change
/// between releases).
const SCHEMATHESIS: &str = "4.32.5";

/// Installs schemathesis from PyPI into target/tools/schemathesis (a
/// virtual environment of the machine's python3) unless that version is
/// there already.
fn ensure_schemathesis() -> anyhow::Result<()> {
    ensure_pypi_tool("schemathesis", SCHEMATHESIS).map(|_| ())
}

/// componentize-py, pinned: it builds the Python example connector.
const COMPONENTIZE_PY: &str = "0.25.1";

/// A command-line tool from PyPI at a pinned version, in its own venv
/// under target/tools/; returns the venv's `bin` directory.
fn ensure_pypi_tool(package: &str, version: &str) -> anyhow::Result<PathBuf> {
    let venv = root().join("target/tools").join(package);
    let bin = venv.join("bin");
    if let Ok(out) = Command::new(bin.join(package)).arg("--version").output()
        && String::from_utf8_lossy(&out.stdout).contains(version)
    {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing {package} {version} from PyPI into {}",
        venv.display()
    );
    let mut c = Command::new("python3");
    c.args(["-m", "venv"]).arg(&venv);
    run(c, &format!("python3 -m venv target/tools/{package}"))?;
    let mut c = Command::new(bin.join("pip"));
    c.args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("{package}=={version}"));
    run(c, &format!("pip install {package}"))?;
    Ok(bin)
}

/// The npm packages an example pins in its package.json and
/// package-lock.json, installed with `npm ci` into target/tools/<name>
/// (not into the source tree) unless that lock is installed there already;
/// returns the install's `node_modules/.bin`.
fn ensure_npm_tools(example: &str, name: &str) -> anyhow::Result<PathBuf> {
    apt_install_if_missing("npm", "nodejs npm");
    let source = root().join("examples/connectors").join(example);
    let dir = root().join("target/tools").join(name);
    let lock = std::fs::read(source.join("package-lock.json"))?;
    let bin = dir.join("node_modules/.bin");
    if std::fs::read(dir.join("package-lock.json")).is_ok_and(|l| l == lock)
        && dir.join("node_modules/.package-lock.json").exists()
    {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing {example}'s package-lock.json from the npm registry into {}",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(source.join("package.json"), dir.join("package.json"))?;
    std::fs::write(dir.join("package-lock.json"), &lock)?;
    let mut c = Command::new("npm");
    c.current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    run(c, &format!("npm ci (target/tools/{name})"))?;
    Ok(bin)
}

/// Builds the example connectors in other component languages into
/// target/examples/, against the contract package, as a vendor would
/// (docs/vendors.md): `python_krr.wasm` with componentize-py and
/// `js_krr.wasm` with componentize-js.
fn build_examples() -> anyhow::Result<()> {
    let kit = contract_package(None)?.join("wit");
    let world = format!("folkhub:kit/http-answering-connector@{KIT_CONTRACT}");
    let out = root().join("target/examples");
    std::fs::create_dir_all(&out)?;

    let bin = ensure_npm_tools("js-krr", "componentize-js")?;
    let mut c = Command::new(bin.join("componentize-js"));
    c.current_dir(root().join("examples/connectors/js-krr"))
        .arg("app.js")
        .arg("-w")
        .arg(&kit)
        .args(["-n", &world, "-o"])
        .arg(out.join("js_krr.wasm"));
    run(c, "componentize-js (examples/connectors/js-krr)")?;

    let bin = ensure_pypi_tool("componentize-py", COMPONENTIZE_PY)?;
    let mut c = Command::new(bin.join("componentize-py"));
    c.current_dir(root().join("examples/connectors/python-krr"))
        .arg("-d")
        .arg(&kit)
        .args(["-w", &world])
        .args(["componentize", "app", "-o"])
        .arg(out.join("python_krr.wasm"));
    run(
        c,
        "componentize-py componentize (examples/connectors/python-krr)",
    )
}

/// The local PostgreSQL helper the tests use (plain std, shared source).
#[path = "../../host/store/src/local_postgres.rs"]
#[allow(dead_code)]
mod local_postgres;

/// PostgreSQL's server programs, from Debian's `postgresql` package when
/// they are missing (the store suite runs on both backends; each test
/// process starts its own throwaway cluster with them).
fn ensure_postgres() -> anyhow::Result<()> {
    if local_postgres::bin_dir().is_ok() {
        return Ok(());
    }
    apt_install_if_missing("/usr/lib/postgresql/*/bin/initdb", "postgresql");
    local_postgres::bin_dir()
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The contract version a vendor builds against: the newest released.
const KIT_CONTRACT: &str = "2.2.0";

/// Writes the vendor's contract package (docs/vendors.md):
/// - `wit/world.wit`: package `folkhub:kit`, worlds that include the
///   contract's worlds and import `wasi:http/outgoing-handler`, so a
///   componentize-py or componentize-js build binds the HTTP client;
/// - `wit/deps/folkhub-connector/`: the released contract text;
/// - `wit/deps/wasi-*/`: the WASI 0.2 packages this host links, read from
///   the `wasmtime-wasi-http` crate in cargo's registry (the exact version
///   Cargo.lock pins). They are generated, never committed: they are the
///   WASI project's files, and the host's own copy is the one that matters.
fn contract_package(out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let root = root();
    let out = out
        .unwrap_or_else(|| root.join(format!("target/contract/folkhub-connector-{KIT_CONTRACT}")));
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"wasmtime-wasi-http\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(|| anyhow::anyhow!("Cargo.lock has no wasmtime-wasi-http"))?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or_else(|| anyhow::anyhow!("neither CARGO_HOME nor HOME is set"))?;
    let crate_dir = format!("wasmtime-wasi-http-{version}");
    let deps = std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| index.path().join(&crate_dir).join("wit/deps"))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{crate_dir} is not in {}/registry/src: run `cargo fetch` first",
                cargo_home.display()
            )
        })?;
    let wit = out.join("wit");
    if wit.exists() {
        std::fs::remove_dir_all(&wit)?;
    }
    let mut wasi_version = None;
    for entry in std::fs::read_dir(&deps)? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        if name == "http" {
            wasi_version = text
                .lines()
                .find_map(|l| l.strip_prefix("package wasi:http@"))
                .and_then(|v| v.strip_suffix(';'))
                .map(str::to_string);
        }
        let dir = wit.join(format!("deps/wasi-{name}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.wit")), text)?;
    }
    let wasi = wasi_version
        .ok_or_else(|| anyhow::anyhow!("{} has no wasi:http package", deps.display()))?;
    let contract = wit.join("deps/folkhub-connector");
    std::fs::create_dir_all(&contract)?;
    std::fs::copy(
        root.join(format!("wit/released/connector@{KIT_CONTRACT}.wit")),
        contract.join("connector.wit"),
    )?;
    let worlds = [
        (
            "http-connector",
            "connector",
            "source: lookups and a change feed",
        ),
        (
            "http-answering-connector",
            "answering-connector",
            "and answers that say what they cover (2.1)",
        ),
        (
            "http-searching-connector",
            "searching-connector",
            "and search (2.2)",
        ),
        ("http-full-connector", "full-connector", "every export"),
    ];
    let mut text = format!(
        "/// Worlds for building a folkhub connector outside Rust\n/// (componentize-py, componentize-js): the contract's worlds with the\n/// HTTP client the host provides named as an import. Generated by\n/// `cargo xtask contract-package`; the host links WASI {wasi}.\npackage folkhub:kit@{KIT_CONTRACT};\n"
    );
    for (world, includes, what) in worlds {
        text.push_str(&format!(
            "\n/// {what}\nworld {world} {{\n    include folkhub:connector/{includes}@{KIT_CONTRACT};\n    import wasi:http/outgoing-handler@{wasi};\n}}\n"
        ));
    }
    std::fs::write(wit.join("world.wit"), text)?;
    Ok(out)
}

fn test() -> anyhow::Result<()> {
    // Formatting and lints first: a warning fails the run, as in review.
    // (A minimal rustup profile lacks both components.)
    for (tool, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        let present = cargo()
            .args([tool, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            let mut c = Command::new("rustup");
            c.args(["component", "add", component]);
            run(c, &format!("rustup component add {component}"))?;
        }
    }
    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    run(
        c,
        "cargo fmt --all -- --check (run `cargo fmt --all` to fix)",
    )?;
    let mut c = cargo();
    c.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    run(c, "cargo clippy --all-targets -- -D warnings")?;
    ensure_wasm_target()?;
    apt_install_if_missing("sha256sum", "coreutils");
    ensure_postgres()?;
    ensure_schemathesis()?;
    build_connectors(false)?;
    // The vendor's contract package (a test resolves it) and the examples
    // built with it (tests/all/vendor.rs installs the Python one).
    build_examples()?;
    let mut c = cargo();
    // Doc tests are left out: the crates document with prose, not doctests.
    c.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--lib",
        "--bins",
        "--tests",
        "--exclude",
        "folkhub-connector-sdk",
    ]);
    for krate in TEST_COMPONENTS {
        c.args(["--exclude", krate]);
    }
    eprintln!("xtask: cargo test (host, simulator, connector mapping, integration)");
    c.stdout(Stdio::piped());
    let mut child = c.spawn().context("starting cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let words: Vec<&str> = part.split_whitespace().collect();
                    let number = |i: usize| {
                        words
                            .get(i)
                            .and_then(|w| w.parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    match words.as_slice() {
                        [_, _, "passed"] => passed += number(1),
                        [_, "passed"] => passed += number(0),
                        [_, "failed"] => failed += number(0),
                        [_, "ignored"] => ignored += number(0),
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("\nfolkhub: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

struct Guard(Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < within {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {within:?}")
}

fn demo(port: u16, seed: u64, count: usize, sim_port: u16, postgres: bool) -> anyhow::Result<()> {
    build_connectors(false)?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "folkhub", "-p", "folkhub-sim"]);
    run(c, "cargo build --release (folkhub, folkhub-sim)")?;
    let bin = root().join("target/release");
    let data = root().join("data/demo");
    std::fs::create_dir_all(&data)?;
    let key = data.join("maskinporten-key.pem");
    if !key.exists() {
        let mut c = Command::new(bin.join("folkhub"));
        c.args(["credentials", "generate-key", "--out"]).arg(&key);
        run(c, "folkhub credentials generate-key")?;
    }
    // A fresh demo store each time: the simulator's population is new too.
    let _ = std::fs::remove_file(data.join("folkhub.db"));
    let _ = std::fs::remove_file(data.join("folkhub.db-wal"));
    let _ = std::fs::remove_file(data.join("folkhub.db-shm"));
    for file in [
        "folkhub-access.db",
        "folkhub-access.db-wal",
        "folkhub-access.db-shm",
    ] {
        let _ = std::fs::remove_file(data.join(file));
    }
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let tls_port = sim_port + 1;
    let tls_url = format!("https://127.0.0.1:{tls_port}");
    // The simulator writes a throwaway CA and SPAR client certificate here.
    let pki = data.join("pki");
    // The simulator says how a host reaches it (paths, scopes, credentials).
    let connectors = Command::new(bin.join("folkhub-sim"))
        .args([
            "host-config",
            "--url",
            &sim_url,
            "--tls-url",
            &tls_url,
            "--client-id",
            "folkhub-demo",
            "--pki-dir",
        ])
        .arg(&pki)
        .arg("--key-file")
        .arg(&key)
        .output()
        .context("running folkhub-sim host-config")?;
    if !connectors.status.success() {
        bail!(
            "folkhub-sim host-config failed: {}",
            String::from_utf8_lossy(&connectors.stderr)
        );
    }
    let connectors = String::from_utf8(connectors.stdout)
        .context("folkhub-sim host-config printed non-UTF-8")?;
    // The store: a SQLite file, or a database in the demo's own PostgreSQL
    // cluster (new each time, like the file).
    let store_url = if postgres {
        local_database(&data.join("postgres"))?
    } else {
        format!("sqlite://{}", data.join("folkhub.db").display())
    };
    let config = data.join("folkhub.toml");
    std::fs::write(
        &config,
        format!(
            r#"# Written by `cargo xtask demo`.
[store]
url = "{store_url}"
[server]
listen = "127.0.0.1:{port}"
[registry]
manifest = "{manifest}"
[runtime]
cache_dir = "{cache}"
# The store keeps the persons clients follow (and the guardians of
# followed minors), not the whole population.
[follow]
scope = "followed"
# The demo's webhook receiver listens on loopback over plain HTTP.
[webhooks]
allow_http = true
allow_private_networks = true
[jobs.feed]
kind = "changes"
connector = "folkeregister"
every = "10s"

{connectors}"#,
            manifest = root().join("registry-manifest.toml").display(),
            cache = root().join("data/cache").display(),
        ),
    )?;
    let mut children = Guard(vec![]);
    let public = key.with_extension("pub.pem");
    let sim = Command::new(bin.join("folkhub-sim"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--listen-tls",
            &format!("127.0.0.1:{tls_port}"),
            "--seed",
            &seed.to_string(),
            "--count",
            &count.to_string(),
        ])
        .args(["--change-every", "5", "--trust-client"])
        .arg(format!("folkhub-demo={}", public.display()))
        .arg("--pki-dir")
        .arg(&pki)
        .spawn()
        .context("starting folkhub-sim")?;
    children.0.push(sim);
    wait_for_port(sim_port, Duration::from_secs(20))?;
    let folkhub = |args: &[&str]| {
        let mut c = Command::new(bin.join("folkhub"));
        // See docs/operator-guide.md: library backtraces cost ~10 µs per connector call.
        c.env("RUST_LIB_BACKTRACE", "0");
        c.arg("--config").arg(&config).args(args);
        c
    };
    let truth = Command::new(bin.join("folkhub-sim"))
        .args([
            "population",
            "--seed",
            &seed.to_string(),
            "--count",
            &count.to_string(),
        ])
        .output()?;
    let mut ids: Vec<String> = String::from_utf8_lossy(&truth.stdout)
        .lines()
        .take(2)
        .filter_map(|l| {
            l.split("\"ids\":[\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(String::from)
        })
        .collect();
    // A Swede (from SPAR) and a Finn (from DVV; `fi:` because `DDMMYY-NNNT`
    // can also read as a Swedish number).
    let swedes = Command::new(bin.join("folkhub-sim"))
        .args(["ids", "--register", "spar", "--seed", &seed.to_string()])
        .args(["--count", &count.to_string()])
        .output()?;
    ids.extend(
        String::from_utf8_lossy(&swedes.stdout)
            .lines()
            .next()
            .map(String::from),
    );
    // The Finns the demo follows (VTJ has no feed of everyone): a few.
    let finns = Command::new(bin.join("folkhub-sim"))
        .args(["ids", "--register", "dvv", "--seed", &seed.to_string()])
        .args(["--count", &count.to_string()])
        .output()
        .context("folkhub-sim ids")?;
    let finns: Vec<String> = String::from_utf8_lossy(&finns.stdout)
        .lines()
        .take(3)
        .map(String::from)
        .collect();
    std::fs::write(data.join("finns.txt"), finns.join("\n") + "\n")?;
    ids.extend(finns.first().map(|f| format!("fi:{f}")));
    // Two API clients: an admin with the full basis (e.g. a health
    // service's operator) and a school; their keys are printed once.
    let key_of = |name: &str, args: &[&str]| {
        let mut all = vec!["clients", "add", name];
        all.extend(args);
        add_client(folkhub(&all))
    };
    let admin_key = key_of(
        "demo-admin",
        &["--basis", "full", "--purpose", "trying folkhub", "--admin"],
    )?;
    let school_key = key_of(
        "demo-school",
        &[
            "--basis",
            "school",
            "--purpose",
            "pupil register of the demo school",
            "--fetch",
        ],
    )?;
    // The school follows its pupils (Norwegians aged 6 to 19) but one, the
    // new pupil it will fetch on demand; the admin follows the example
    // persons and the Finns.
    let pupils = Command::new(bin.join("folkhub-sim"))
        .args(["ids", "--register", "folkeregister", "--ages", "6-19"])
        .args(["--seed", &seed.to_string(), "--count", &count.to_string()])
        .output()
        .context("folkhub-sim ids --ages")?;
    let mut pupils: Vec<String> = String::from_utf8_lossy(&pupils.stdout)
        .lines()
        .map(String::from)
        .collect();
    let new_pupil = pupils
        .pop()
        .context("the simulated population has no pupils")?;
    let mut args = vec!["follows", "add", "--client", "demo-school"];
    args.extend(pupils.iter().map(String::as_str));
    run(
        folkhub(&args),
        &format!(
            "folkhub follows add --client demo-school ({} pupils)",
            pupils.len()
        ),
    )?;
    let mut args = vec!["follows", "add", "--client", "demo-admin"];
    args.extend(ids.iter().map(String::as_str));
    let finn_ids: Vec<String> = finns.iter().map(|f| format!("fi:{f}")).collect();
    args.extend(finn_ids.iter().map(String::as_str));
    run(folkhub(&args), "folkhub follows add --client demo-admin")?;
    // Folkeregisteret first: its full sync finds the Norwegian population;
    // KRR's then looks up everyone the store knows, and Kartverket enriches
    // their addresses. SPAR's first avisering file names every Swede of the
    // customer's selection. VTJ has no "everyone" feed: the operator adds
    // the Finns to follow. Only followed persons are stored: the others'
    // feed events are skipped without a lookup.
    // KRR is installed behind (2.0.0, contract 1.1) so the upgrade flow can
    // be tried: dry run, upgrade to 2.2.0 (contract 2.1), rollback.
    for connector in ["folkeregister", "krr", "kartverket", "spar", "dvv"] {
        let mut args = vec!["connectors", "install", connector];
        if connector == "krr" {
            args.extend(["--version", "2.0.0"]);
        }
        run(folkhub(&args), &format!("folkhub {}", args.join(" ")))?;
        if connector == "dvv" {
            let file = data.join("finns.txt").display().to_string();
            run(
                folkhub(&["sync", connector, "--ids", &file]),
                &format!("folkhub sync {connector} --ids {file}"),
            )?;
        } else {
            run(
                folkhub(&["sync", connector, "--full"]),
                &format!("folkhub sync {connector} --full"),
            )?;
        }
    }
    let server = folkhub(&["serve"])
        .spawn()
        .context("starting folkhub serve")?;
    children.0.push(server);
    wait_for_port(port, Duration::from_secs(20))?;
    let hook = webhook_receiver()?;
    let subscribed = http_post(
        port,
        "/v1/webhooks",
        &school_key,
        &format!("{{\"url\": \"{hook}\"}}"),
    )?;
    let hook_id = subscribed
        .split("\"id\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .unwrap_or("?")
        .to_string();
    let first = ids.first().cloned().unwrap_or_default();
    println!(
        "\nfolkhub demo is running: API on http://127.0.0.1:{port}, simulators on {sim_url} and {tls_url} (SPAR, mutual TLS); one change every 5 s\n"
    );
    println!("API clients (keys shown once; `folkhub clients list` lists them):");
    println!("  demo-admin  basis full, admin    X-API-Key: {admin_key}");
    println!("  demo-school basis school         X-API-Key: {school_key}");
    println!(
        "\nThe store follows {} pupils of demo-school (and their guardians) and the admin's example persons;\nfeed events about anyone else are skipped. demo-school's webhook (subscription {hook_id}) posts\neach change of a pupil to a receiver this demo runs at {hook}: deliveries are printed here as they come.",
        pupils.len()
    );
    println!("\nTry:");
    let admin = format!("curl -s -H 'X-API-Key: {admin_key}'");
    let school = format!("curl -s -H 'X-API-Key: {school_key}'");
    let api = format!("http://127.0.0.1:{port}");
    println!("  curl -s {api}/v1/health                 # status only; {admin} for the details");
    for id in &ids {
        println!("  {admin} {api}/v1/persons/{id}");
    }
    println!("  {admin} '{api}/v1/persons/{first}?provenance=true'");
    println!(
        "  {school} {api}/v1/persons/{first}         # what a school may see; withheld fields listed"
    );
    println!("  {admin} '{api}/v1/persons/{first}?fields=name,address'");
    println!(
        "  {admin} '{api}/v1/persons?id={}'          # search by the birth-date part of the ID",
        first.get(..6).unwrap_or("010190")
    );
    println!(
        "  {admin} -X POST {api}/v1/persons/batch -H 'content-type: application/json' -d '{{\"ids\": [\"{first}\"]}}'"
    );
    println!("  {admin} '{api}/v1/changes?since=0&limit=5'");
    println!("  {school} '{api}/v1/follows?limit=3'          # the pupils demo-school follows");
    println!(
        "  {school} {api}/v1/persons/{new_pupil}   # a new pupil, not stored: fetched from Folkeregisteret now, then followed"
    );
    println!(
        "  {school} -X PUT {api}/v1/follows/{new_pupil}   # follow (201), or 200 when followed already"
    );
    println!(
        "  {school} -X POST {api}/v1/persons/search -H 'content-type: application/json' -d '{{\"family\": \"Andersson\", \"municipality\": \"0180\", \"limit\": 5}}'   # search SPAR by name and kommun (a paid call): hits, or \"narrow\" when more than 5 match; follow a hit to keep it"
    );
    println!(
        "  {school} {api}/v1/webhooks/{hook_id}/deliveries?limit=3   # every delivery and attempt"
    );
    println!(
        "  target/release/folkhub --config {} follows sweep   # delete persons nobody follows after follow.retention",
        config.display()
    );
    println!("  {admin} {api}/v1/persons/12345678901        # 400 invalid-id");
    println!("  curl -s {api}/v1/persons/{first}        # 401: every read needs a client");
    println!("  {admin} '{api}/v1/access-log?client=demo-school'   # who read what, and why");
    println!("  curl -s {api}/v1/openapi.json | head -c 300; {admin} {api}/metrics | head");
    println!(
        "  target/release/folkhub --config {} audit verify   # the access log's hash chain holds",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} audit --client demo-school",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} person get {first}",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} sync folkeregister --changes   # pick up the simulator's changes",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} sync krr --changes",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} sync dvv --changes          # VTJ changes to the followed Finns",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} sync kartverket --changes   # districts of addresses that changed",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} connectors list",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} connectors upgrade krr --to 2.2.0 --dry-run   # notes, differences, shadow run on 100 persons",
        config.display()
    );
    println!(
        "  target/release/folkhub --config {} connectors upgrade krr --to 2.2.0   # then: connectors rollback krr, connectors history krr",
        config.display()
    );
    println!("  {admin} {api}/v1/connectors");
    println!(
        "  target/release/folkhub-sim population --seed {seed} --count {count} | head -3   # the ground truth"
    );
    println!("\nCtrl-C stops everything.");
    // Ctrl-C reaches the whole process group: the server and simulator stop
    // with us. If the server exits on its own, stop the simulator too.
    let status = children.0[1].wait()?;
    drop(children);
    if !status.success() {
        bail!("folkhub serve exited with {status}");
    }
    Ok(())
}

/// A small webhook receiver for the demo: prints each delivery's
/// `webhook-id` and body, answers 204. Returns its URL.
fn webhook_receiver() -> anyhow::Result<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the receiver")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut length, mut id) = (0usize, String::new());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let header = line.trim_end().to_string();
                line.clear();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "webhook-id" => id = value.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length.min(1 << 20)];
            if reader.read_exact(&mut body).is_ok() {
                println!("webhook {id}: {}", String::from_utf8_lossy(&body));
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    });
    Ok(url)
}

/// POSTs JSON to the demo's API as a client; the answer's body.
fn http_post(port: u16, path: &str, key: &str, body: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.1 2") {
        bail!(
            "POST {path}: {}",
            head.lines().next().unwrap_or("no answer")
        );
    }
    Ok(body.to_string())
}

/// Runs `folkhub clients add …` and returns the API key it printed.
fn add_client(mut command: Command) -> anyhow::Result<String> {
    let out = command.output().context("folkhub clients add")?;
    if !out.status.success() {
        bail!(
            "folkhub clients add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .split("X-API-Key: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(String::from)
        .context("folkhub clients add printed no key")
}

/// A database in a throwaway local PostgreSQL cluster under `dir`, stopped
/// and removed when this process ends.
fn local_database(dir: &std::path::Path) -> anyhow::Result<String> {
    ensure_postgres()?;
    let _ = std::fs::remove_dir_all(dir);
    let cluster = local_postgres::free_port()
        .and_then(|port| local_postgres::Cluster::start(dir, port, false))
        .map_err(|e| anyhow::anyhow!("starting a local PostgreSQL: {e}"))?;
    cluster
        .stop_when_gone(std::process::id())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = cluster
        .create_database("folkhub")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("xtask: PostgreSQL at {url} (stopped when this command ends)");
    Ok(url)
}

/// A command's wall time and peak resident memory. The peak is the
/// kernel's high-water mark (`VmHWM`), read every 50 ms while it runs, so
/// growth in its last 50 ms can be missed.
struct Measured {
    seconds: f64,
    peak_rss_mib: f64,
    stdout: String,
}

fn measured(mut c: Command, what: &str) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
            && let Some(kib) = line.split_whitespace().nth(1).and_then(|n| n.parse().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let seconds = started.elapsed().as_secs_f64();
    let stdout = reader.join().unwrap_or_default();
    if !status.success() {
        anyhow::bail!("{what} failed ({status}): {stdout}");
    }
    Ok(Measured {
        seconds,
        peak_rss_mib: peak_kib as f64 / 1024.0,
        stdout,
    })
}

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// `name N` in a sync summary line.
fn count_in(summary: &str, name: &str) -> Option<u64> {
    let at = summary.find(&format!("{name} "))? + name.len() + 1;
    summary[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The floor's `seconds=S rows=R persons=P`.
fn floor_line(text: &str) -> (f64, u64, u64) {
    let get = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get("seconds"), get("rows") as u64, get("persons") as u64)
}

/// One step of `bench-bulk`.
#[derive(Default)]
struct BulkStep {
    persons: usize,
    sim_start: f64,
    first: f64,
    first_fetched: u64,
    first_rss: f64,
    first_sim_cpu: f64,
    refresh: f64,
    refresh_rss: f64,
    feed: f64,
    feed_events: u64,
    feed_rss: f64,
    bytes: u64,
    floor_first: Option<f64>,
    floor_refresh: Option<f64>,
    floor_feed: Option<(f64, u64)>,
}

/// A benchmark's host and simulator in `dir`: a Maskinporten key the
/// simulator trusts, a folkhub.toml wired to the simulator (SQLite in
/// `dir`, or a throwaway PostgreSQL; `[server] listen` when `server` is
/// given), and the simulator serving `persons` on `sim_port` (TLS on the
/// next port), with Folkeregisteret installed.
fn bench_setup(
    dir: &Path,
    sim_port: u16,
    persons: usize,
    postgres: bool,
    server: Option<u16>,
) -> anyhow::Result<BenchHost> {
    let bin = root().join("target/release");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let key = dir.join("maskinporten-key.pem");
    let mut c = Command::new(bin.join("folkhub"));
    c.args(["credentials", "generate-key", "--out"]).arg(&key);
    run(c, "folkhub credentials generate-key")?;
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let pki = dir.join("pki");
    let connectors = Command::new(bin.join("folkhub-sim"))
        .args(["host-config", "--url", &sim_url])
        .args(["--tls-url", &format!("https://127.0.0.1:{}", sim_port + 1)])
        .args(["--client-id", "folkhub-bench", "--pki-dir"])
        .arg(&pki)
        .arg("--key-file")
        .arg(&key)
        .output()
        .context("folkhub-sim host-config")?;
    let config = dir.join("folkhub.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n{}[registry]\nmanifest = \"{}\"\n[runtime]\ncache_dir = \"{}\"\n\n{}",
            if postgres {
                local_database(&dir.join("postgres"))?
            } else {
                format!("sqlite://{}", dir.join("folkhub.db").display())
            },
            server.map_or(String::new(), |port| format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n"
            )),
            root().join("registry-manifest.toml").display(),
            root().join("data/cache").display(),
            String::from_utf8_lossy(&connectors.stdout)
        ),
    )?;
    let started = Instant::now();
    let sim = Command::new(bin.join("folkhub-sim"))
        .args(["serve", "--listen", &format!("127.0.0.1:{sim_port}")])
        .args(["--listen-tls", &format!("127.0.0.1:{}", sim_port + 1)])
        .args([
            "--seed",
            "7",
            "--count",
            &persons.to_string(),
            "--trust-client",
        ])
        .arg(format!(
            "folkhub-bench={}",
            key.with_extension("pub.pem").display()
        ))
        .arg("--pki-dir")
        .arg(&pki)
        .stdout(Stdio::null())
        .spawn()
        .context("starting folkhub-sim")?;
    let sim = Guard(vec![sim]);
    wait_for_port(sim_port, Duration::from_secs(1800))?;
    let host = BenchHost {
        config,
        sim,
        sim_start: started.elapsed(),
    };
    run(
        host.folkhub(&["connectors", "install", "folkeregister"]),
        "install folkeregister",
    )?;
    Ok(host)
}

/// A benchmark's folkhub and its simulator (stopped when this drops).
struct BenchHost {
    config: PathBuf,
    sim: Guard,
    sim_start: Duration,
}

impl BenchHost {
    /// `folkhub --config … ARGS`, the release build.
    fn folkhub(&self, args: &[&str]) -> Command {
        let mut c = Command::new(root().join("target/release/folkhub"));
        c.env("RUST_LIB_BACKTRACE", "0");
        c.arg("--config").arg(&self.config).args(args);
        c
    }
}

/// `cargo xtask bench-bulk`.
fn bench_bulk(
    persons: usize,
    changes: u64,
    single: bool,
    sim_port: u16,
    postgres: bool,
) -> anyhow::Result<()> {
    build_connectors(false)?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "folkhub", "-p", "folkhub-sim"])
        .args([
            "-p",
            "folkhub-tests",
            "--bin",
            "folkhub",
            "--bin",
            "folkhub-sim",
            "--bin",
            "bulk-floor",
        ]);
    run(
        c,
        "cargo build --release (folkhub, folkhub-sim, bulk-floor)",
    )?;
    let bin = root().join("target/release");
    let out = root().join("target/bench-bulk");
    std::fs::create_dir_all(&out)?;
    let mut sizes: Vec<usize> = if single {
        vec![persons]
    } else {
        vec![persons / 100, persons / 10, persons]
    };
    sizes.retain(|&n| n >= 1000);
    sizes.dedup();
    anyhow::ensure!(!sizes.is_empty(), "--persons must be at least 1000");
    let mut steps = Vec::new();
    for &size in &sizes {
        eprintln!("xtask: bench-bulk: {size} persons");
        let dir = out.join(size.to_string());
        let db = dir.join("folkhub.db");
        let host = bench_setup(&dir, sim_port, size, postgres, None)?;
        let sim_pid = host.sim.0[0].id();
        let mut step = BulkStep {
            persons: size,
            sim_start: host.sim_start.as_secs_f64(),
            ..BulkStep::default()
        };
        let folkhub = |args: &[&str]| host.folkhub(args);
        let cpu_before = cpu_seconds(sim_pid);
        let first = measured(folkhub(&["sync", "folkeregister", "--full"]), "first sync")?;
        step.first_sim_cpu = cpu_seconds(sim_pid) - cpu_before;
        step.first = first.seconds;
        step.first_rss = first.peak_rss_mib;
        step.first_fetched = count_in(&first.stdout, "fetched").unwrap_or(0);
        step.bytes = std::fs::read_dir(&dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("folkhub.db"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        if postgres {
            step.bytes = 0;
        }
        let floor = |args: &[&str]| {
            let mut c = Command::new(bin.join("bulk-floor"));
            c.args(args);
            c
        };
        let floor_db = dir.join("floor.db");
        let (src, dst) = (db.display().to_string(), floor_db.display().to_string());
        if !postgres {
            let m = measured(floor(&["first", &src, &dst]), "floor: first")?;
            step.floor_first = Some(floor_line(&m.stdout).0);
        }
        let refresh = measured(folkhub(&["sync", "folkeregister", "--full"]), "refresh")?;
        step.refresh = refresh.seconds;
        step.refresh_rss = refresh.peak_rss_mib;
        if !postgres {
            let m = measured(floor(&["refresh", &dst]), "floor: refresh")?;
            step.floor_refresh = Some(floor_line(&m.stdout).0);
        }
        let marks = if postgres {
            String::new()
        } else {
            measured(floor(&["mark", &src]), "floor: mark")?.stdout
        };
        http_post(sim_port, &format!("/sim/advance?changes={changes}"), "", "")?;
        let feed = measured(folkhub(&["sync", "folkeregister", "--changes"]), "feed")?;
        step.feed = feed.seconds;
        step.feed_rss = feed.peak_rss_mib;
        step.feed_events = count_in(&feed.stdout, "feed events").unwrap_or(0);
        if let [obs, seq] = marks.split_whitespace().collect::<Vec<_>>()[..] {
            let m = measured(floor(&["feed", &src, &dst, obs, seq]), "floor: feed")?;
            let (seconds, _, changed) = floor_line(&m.stdout);
            step.floor_feed = Some((seconds, changed));
        }
        drop(host);
        steps.push(step);
    }
    let report = bulk_report(&steps, changes, postgres);
    std::fs::write(out.join("report.md"), &report)?;
    println!("{report}");
    Ok(())
}

fn bulk_report(steps: &[BulkStep], changes: u64, postgres: bool) -> String {
    let rate = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
    let ratio = |s: f64, floor: Option<f64>| match floor {
        Some(f) if f > 0.0 => format!("{:.1}×", s / f),
        _ => "—".into(),
    };
    let mut r = format!(
        "bench-bulk: store on {}, Folkeregisteret simulator (seed 7), {changes} register changes in the feed step; release build\n\n",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    r.push_str("| persons | first sync /s | floor /s | × floor | unchanged refresh /s | floor /s | × floor | feed events /s | floor persons /s | × floor | bytes/person | peak RSS sync MiB | sim start s | sim CPU in first sync |\n");
    r.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in steps {
        let n = s.persons as f64;
        let (feed_floor, feed_ratio) = match s.floor_feed {
            Some((seconds, changed)) => (
                format!("{:.0}", rate(changed as f64, seconds)),
                // The same persons changed: time against time.
                ratio(s.feed, Some(seconds)),
            ),
            None => ("—".into(), "—".into()),
        };
        r.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.0} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {:.1} | {:.1} s of {:.1} s |\n",
            s.persons,
            rate(n, s.first),
            s.floor_first.map_or("—".into(), |f| format!("{:.0}", rate(n, f))),
            ratio(s.first, s.floor_first),
            rate(n, s.refresh),
            s.floor_refresh.map_or("—".into(), |f| format!("{:.0}", rate(n, f))),
            ratio(s.refresh, s.floor_refresh),
            rate(s.feed_events as f64, s.feed),
            feed_floor,
            feed_ratio,
            if s.bytes > 0 { format!("{:.0}", s.bytes as f64 / n) } else { "—".into() },
            s.first_rss.max(s.refresh_rss).max(s.feed_rss),
            s.sim_start,
            s.first_sim_cpu,
            s.first,
        ));
    }
    r.push_str("\nGrowth (time per person at a step over the step before; linear is 1.0, the issue's bound 1.5):\n");
    for pair in steps.windows(2) {
        let per = |s: &BulkStep, t: f64| t / s.persons as f64;
        r.push_str(&format!(
            "- {} → {}: first sync {:.2}, unchanged refresh {:.2}\n",
            pair[0].persons,
            pair[1].persons,
            per(&pair[1], pair[1].first) / per(&pair[0], pair[0].first),
            per(&pair[1], pair[1].refresh) / per(&pair[0], pair[0].refresh),
        ));
    }
    for s in steps {
        r.push_str(&format!(
            "\n{} persons: first sync fetched {} in {:.1} s; feed applied {} events in {:.1} s",
            s.persons, s.first_fetched, s.first, s.feed_events, s.feed
        ));
    }
    r.push('\n');
    r
}

/// `cargo xtask bench-api`: a store of `count` synced persons served on
/// loopback, one client with no practical rate limit, and wrk reading
/// random persons by ID.
fn bench_api(
    count: usize,
    seconds: u32,
    port: u16,
    sim_port: u16,
    postgres: bool,
) -> anyhow::Result<()> {
    apt_install_if_missing("wrk", "wrk");
    build_connectors(false)?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "folkhub", "-p", "folkhub-sim"]);
    run(c, "cargo build --release (folkhub, folkhub-sim)")?;
    let bin = root().join("target/release");
    let dir = root().join("target/bench-api");
    let host = bench_setup(&dir, sim_port, count, postgres, Some(port))?;
    let config = host.config.clone();
    let folkhub = |args: &[&str]| host.folkhub(args);
    run(folkhub(&["sync", "folkeregister", "--full"]), "first sync")?;
    let secret = add_client(folkhub(&[
        "clients",
        "add",
        "bench",
        "--basis",
        "full",
        "--purpose",
        "load test",
        "--rate",
        "1000000",
    ]))?;
    // /metrics is for admin clients: the access log's count is read there.
    let admin = add_client(folkhub(&[
        "clients",
        "add",
        "bench-admin",
        "--basis",
        "full",
        "--purpose",
        "reading the bench's metrics",
        "--admin",
    ]))?;
    // The current ID of every person Folkeregisteret knows, for wrk to
    // pick from.
    let listed = Command::new(bin.join("folkhub-sim"))
        .args(["ids", "--register", "folkeregister", "--seed", "7"])
        .args(["--count", &count.to_string()])
        .output()?;
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(String::from)
        .collect();
    if ids.len() < 1000 {
        bail!("only {} IDs in the population", ids.len());
    }
    let list = ids
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(",");
    let reads = dir.join("reads.lua");
    std::fs::write(
        &reads,
        format!(
            "ids = {{{list}}}\nmath.randomseed(7)\nwrk.headers[\"X-API-Key\"] = \"{secret}\"\nrequest = function()\n  return wrk.format(\"GET\", \"/v1/persons/\" .. ids[math.random(#ids)])\nend\n"
        ),
    )?;
    let batch = dir.join("batch.lua");
    let thousand = ids[..1000]
        .iter()
        .map(|i| format!("\\\"{i}\\\""))
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(
        &batch,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"X-API-Key\"] = \"{secret}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = \"{{\\\"ids\\\": [{thousand}]}}\"\n"
        ),
    )?;
    let url = format!("http://127.0.0.1:{port}");
    let wrk = |connections: u32, script: &std::path::Path, path: &str, what: &str| {
        let mut c = Command::new("wrk");
        c.args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("{url}{path}"));
        run(c, what)
    };
    // Full refreshes one after another while `during` runs.
    let refreshing = |during: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<()> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let config = config.clone();
        let bin = bin.clone();
        let flag = stop.clone();
        let loop_ = std::thread::spawn(move || {
            let mut done = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = Command::new(bin.join("folkhub"))
                    .env("RUST_LIB_BACKTRACE", "0")
                    .arg("--config")
                    .arg(&config)
                    .args(["sync", "folkeregister", "--full"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(anyhow::anyhow!("a refresh failed"));
                }
                done += 1;
            }
            Ok(done)
        });
        std::thread::sleep(Duration::from_millis(500));
        let result = during();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let done = loop_
            .join()
            .map_err(|_| anyhow::anyhow!("refresh thread"))??;
        println!("({done} full refreshes of {count} persons ran during the measurement)");
        result
    };
    let mut logged = 0u64;
    for mode in ["before-answer", "buffered"] {
        let text = std::fs::read_to_string(&config)?;
        let text = text
            .lines()
            .filter(|l| !l.starts_with("access_log ="))
            .map(|l| {
                if l.starts_with("listen =") {
                    format!("{l}\naccess_log = \"{mode}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text)?;
        let mut server = folkhub(&["serve"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting folkhub serve")?;
        wait_for_port(port, Duration::from_secs(20))?;
        println!(
            "\n== access_log = {mode}: person reads by ID, alone (1 wrk thread, 4 connections)"
        );
        wrk(4, &reads, "/", "wrk reads alone")?;
        println!(
            "\n== access_log = {mode}: person reads by ID, alone (1 wrk thread, 16 connections)"
        );
        wrk(16, &reads, "/", "wrk reads alone, 16 connections")?;
        println!("\n== access_log = {mode}: batches of 1,000 IDs (1 connection)");
        wrk(1, &batch, "/v1/persons/batch", "wrk batch")?;
        println!(
            "\n== access_log = {mode}: person reads by ID during full refreshes (4 connections)"
        );
        refreshing(&|| wrk(4, &reads, "/", "wrk reads during refreshes"))?;
        if let Ok(m) = Command::new("curl")
            .args(["-s", "-H", &format!("x-api-key: {admin}")])
            .arg(format!("{url}/metrics"))
            .output()
        {
            for line in String::from_utf8_lossy(&m.stdout).lines() {
                if let Some(n) = line.strip_prefix("folkhub_access_log_entries_total ") {
                    logged += n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        let _ = Command::new("kill")
            .args(["-INT", &server.id().to_string()])
            .status();
        server.wait()?;
    }
    drop(host);
    if postgres {
        println!("\naccess log: {logged} entries (in the PostgreSQL database)");
        return Ok(());
    }
    let bytes: u64 = ["folkhub-access.db", "folkhub-access.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    match bytes.checked_div(logged) {
        Some(per_entry) => println!(
            "\naccess log: {logged} entries in {:.1} MB ({per_entry} bytes per entry)",
            bytes as f64 / 1e6
        ),
        None => println!(
            "\naccess log: {:.1} MB; its entries were not counted (GET /metrics answered no folkhub_access_log_entries_total)",
            bytes as f64 / 1e6
        ),
    }
    Ok(())
}

/// The fuzz targets of fuzz/Cargo.toml and where their seeds come from.
const FUZZ_TARGETS: &[(&str, &[&str])] = &[
    ("ids", &[]),
    (
        "spar",
        &["tests/fixtures/spar/2021.1", "tests/fixtures/spar/2023.1"],
    ),
    ("vtj", &["tests/fixtures/vtj/vtjkysely-1"]),
    ("folkeregister", &[]),
    ("krr", &["tests/fixtures/krr/v1", "tests/fixtures/krr/v2"]),
    ("kartverket", &[]),
];

/// Seeds written here when no fixture holds that kind of input: a few
/// IDs of every scheme (valid and one digit off), and the smallest answers
/// the mappings take.
fn fuzz_seeds(target: &str) -> Vec<&'static str> {
    match target {
        "ids" => vec![
            "03851598730",
            "no:03851598730",
            "41018012345",
            "198112189876",
            "811218-9876",
            "19811218+9876",
            "131052-308T",
            "010101A123N",
            "fi:131052-308T",
            "se:8112189876",
            // Crashes found before, kept so they stay fixed.
            "81818+++181",
            "seƙ1234567890",
        ],
        "folkeregister" => vec![
            r#"{"dokumenter":[{"identifikasjonsnummer":[{"foedselsEllerDNummer":"03851598730","status":"iBruk"}],"navn":[{"fornavn":"Kari","etternavn":"Nordmann","erGjeldende":true}]}]}"#,
            r#"{"identifikasjonsnummer":[{"foedselsEllerDNummer":"03851598730"}]}"#,
        ],
        "kartverket" => vec![
            r#"{"adresser":[{"adressenavn":"Storgata","nummer":1,"representasjonspunkt":{"lat":59.9,"lon":10.7}}]}"#,
            r#"{"bydeler":[{"bydelsnummer":"030101","bydelsnavn":"Gamle Oslo"}]}"#,
        ],
        _ => vec![],
    }
}

/// `cargo xtask fuzz`.
fn fuzz(seconds: u64, targets: Vec<String>) -> anyhow::Result<()> {
    let known: Vec<&str> = FUZZ_TARGETS.iter().map(|(t, _)| *t).collect();
    for t in &targets {
        if !known.contains(&t.as_str()) {
            bail!("no fuzz target {t:?}; the targets are {}", known.join(", "));
        }
    }
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_fuzz {
        println!("installing cargo-fuzz (once; about three minutes) ...");
        let mut c = Command::new("cargo");
        c.args(["install", "cargo-fuzz", "--locked"]);
        run(c, "cargo install cargo-fuzz")?;
    }
    let mut report = Vec::new();
    for (target, fixtures) in FUZZ_TARGETS {
        if !targets.is_empty() && !targets.iter().any(|t| t == target) {
            continue;
        }
        // The corpus grows between runs under target/ (not committed).
        let corpus = root().join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        for dir in *fixtures {
            for entry in std::fs::read_dir(root().join(dir))? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // The register's answers: XML for SPAR and VTJ, JSON for
                // KRR (not the expected records beside them).
                let answer = match *target {
                    "spar" | "vtj" => name.ends_with(".xml"),
                    _ => name.ends_with(".json") && !name.ends_with(".expected.json"),
                };
                if answer {
                    std::fs::copy(&path, corpus.join(format!("fixture-{name}")))?;
                }
            }
        }
        for (i, seed) in fuzz_seeds(target).iter().enumerate() {
            std::fs::write(corpus.join(format!("seed-{i}")), seed)?;
        }
        println!("fuzzing {target} for {seconds} s ...");
        let started = Instant::now();
        let status = Command::new("cargo")
            .current_dir(root().join("fuzz"))
            .env_remove("CARGO_TARGET_DIR")
            .args(["fuzz", "run", "--fuzz-dir", ".", "-s", "none", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=1024")
            .status()
            .context("running cargo fuzz")?;
        let inputs = std::fs::read_dir(&corpus)?.count();
        report.push(format!(
            "{target:<14} {:>5} s  {inputs:>6} inputs in the corpus  {}",
            started.elapsed().as_secs(),
            if status.success() {
                "no crash".to_string()
            } else {
                format!("CRASH: see fuzz/artifacts/{target}/")
            }
        ));
        if !status.success() {
            break;
        }
    }
    println!("\n{}", report.join("\n"));
    if report.iter().any(|r| r.contains("CRASH")) {
        bail!("a fuzz target crashed; its input is under fuzz/artifacts/");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Demo {
            port,
            seed,
            count,
            sim_port,
            postgres,
        } => demo(port, seed, count, sim_port, postgres),
        Task::Test => test(),
        Task::BuildConnectors { publish } => build_connectors(publish),
        Task::BuildExamples => build_examples(),
        Task::ContractPackage { out } => contract_package(out).map(|dir| {
            println!("xtask: the contract package is in {}", dir.display());
        }),
        Task::BenchApi {
            count,
            seconds,
            port,
            sim_port,
            postgres,
        } => bench_api(count, seconds, port, sim_port, postgres),
        Task::BenchBulk {
            persons,
            changes,
            single,
            sim_port,
            postgres,
        } => bench_bulk(persons, changes, single, sim_port, postgres),
        Task::Bench => {
            build_connectors(false)?;
            let mut c = cargo();
            c.args(["bench", "-p", "folkhub-tests", "--bench", "runtime"]);
            // wasmtime 48 captures a backtrace whenever a Store is dropped if
            // library backtraces are on; that is ~10 µs per call.
            c.env("RUST_LIB_BACKTRACE", "0");
            run(c, "cargo bench")
        }
        Task::Fuzz { seconds, targets } => fuzz(seconds, targets),
        Task::Docs => {
            let mut c = cargo();
            c.args([
                "test",
                "-p",
                "folkhub-tests",
                "--test",
                "all",
                "--",
                "docs::fields_md",
                "--exact",
            ])
            .env("FOLKHUB_WRITE_DOCS", "1");
            run(c, "regenerate docs/fields.md")
        }
    }
}
