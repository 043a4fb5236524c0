//! `folkhub`: parses arguments, loads config, and calls the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use folkhub_app::Host;
use folkhub_cli::{commands, out};

#[derive(Parser)]
#[command(
    name = "folkhub",
    version,
    about = "Person records from the Nordic population registers, merged and served"
)]
struct Cli {
    /// Config file (default: ./folkhub.toml if it exists).
    #[arg(long, global = true, env = "FOLKHUB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Listen address (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Sync from a connector.
    Sync {
        connector: String,
        /// Follow the change feed, then refresh every other known person.
        #[arg(long, conflicts_with = "changes")]
        full: bool,
        /// Follow the change feed from the stored cursor (default).
        #[arg(long)]
        changes: bool,
        /// Look up these persons now: a file with one ID per line (`-` reads
        /// stdin; `#` starts a comment). How an operator adds the persons a
        /// register without an "everyone" feed (DVV) should follow.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["full", "changes"])]
        ids: Option<std::path::PathBuf>,
        /// With --full: refresh only persons whose home municipality is this
        /// (e.g. 0301); the feed is still followed to its head.
        #[arg(long, requires = "full")]
        area: Option<String>,
        /// Look up the guardians of persons of these ages (MIN-MAX years,
        /// e.g. 6-19) that the store does not hold yet.
        #[arg(long, value_name = "AGES", conflicts_with_all = ["full", "changes", "ids"])]
        guardians: Option<String>,
    },
    /// Read persons.
    Person {
        #[command(subcommand)]
        command: PersonCommand,
    },
    /// Manage connector installations.
    Connectors {
        #[command(subcommand)]
        command: ConnectorsCommand,
    },
    /// Publishers' release signatures: keys, signing, checking.
    Releases {
        #[command(subcommand)]
        command: ReleasesCommand,
    },
    /// Credentials the host uses upstream.
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
    /// Manual overrides of a person's field: they win over every source
    /// until removed or expired.
    Overrides {
        #[command(subcommand)]
        command: OverridesCommand,
    },
    /// The run log book: every sync run with its counts and errors.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Register calls and their cost by month, connector and job.
    Costs {
        /// YYYY-MM (default: every month).
        #[arg(long)]
        month: Option<String>,
    },
    /// Fields where sources of equal rank disagree.
    Conflicts,
    /// Persons the store merged because a register said their IDs are one
    /// person; undo a wrong link.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Recompute every merged record from the observation log and report
    /// (and, without --check, store) any that differ.
    Rebuild {
        /// Report only; change nothing.
        #[arg(long)]
        check: bool,
    },
    /// API clients: who may read, with which legal basis and purpose.
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Follow sets: the persons a client or a population follows. With
    /// follow.scope = "followed" the store keeps only these (and the
    /// guardians of followed minors).
    Follows {
        #[command(subcommand)]
        command: FollowsCommand,
    },
    /// Webhook subscriptions of every client and their deliveries.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Populations several clients share, each a follow set.
    Populations {
        #[command(subcommand)]
        command: PopulationsCommand,
    },
    /// The access log: every read of person data, with client, purpose,
    /// person, fields and time (oldest first); `verify` checks its hash
    /// chain, `export` writes a day of it for write-once storage.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        command: Option<AuditCommand>,
        /// Only this client's reads.
        #[arg(long)]
        client: Option<String>,
        /// Only reads of this person (any of their IDs).
        #[arg(long)]
        person: Option<String>,
        /// From this day (YYYY-MM-DD) or time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Before this day or time.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Print the API's OpenAPI 3.1 document (what GET /v1/openapi.json serves).
    Openapi,
    /// Bring the store's schema to this build's version (SQLite or
    /// PostgreSQL, whichever store.url names). Safe to run again, and from
    /// several hosts at once: each migration is applied once.
    Migrate {
        /// Only say which version the database is at and what would run.
        #[arg(long)]
        check: bool,
    },
    /// Contract versions this host supports.
    Version,
}

/// Whose follow set: a client's own or a population's.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct SetArgs {
    /// The client's own set.
    #[arg(long)]
    client: Option<String>,
    /// A population's set.
    #[arg(long)]
    population: Option<String>,
}

#[derive(Subcommand)]
enum FollowsCommand {
    /// List the members of a set (the IDs as they were given).
    List {
        #[command(flatten)]
        set: SetArgs,
        #[arg(long)]
        json: bool,
    },
    /// Add IDs to a set.
    Add {
        #[command(flatten)]
        set: SetArgs,
        /// IDs (any country; `no:`, `se:`, `fi:` prefixes allowed).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove IDs from a set.
    Remove {
        #[command(flatten)]
        set: SetArgs,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete persons nobody has followed for follow.retention now (what
    /// a `retention` job does), each deletion audited.
    Sweep,
    /// The deletion audit: persons deleted because nobody followed them.
    Deletions {
        /// Say whether this ID was deleted (its keyed digest is compared).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Every subscription, disabled ones included.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A subscription's newest messages and their attempts.
    Deliveries {
        id: i64,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Stop a subscription.
    Disable {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum PopulationsCommand {
    /// Create a population the named clients share.
    Add {
        name: String,
        #[arg(long)]
        purpose: String,
        /// Clients that may read and change its members (comma-separated).
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
    },
    /// Every population with its clients and size.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Let a client use a population.
    Grant { name: String, client: String },
    /// Stop a client using a population.
    Revoke { name: String, client: String },
    /// Delete a population and its member list (persons nobody else
    /// follows are deleted by the retention sweep later).
    Drop { name: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the access log's hash chain from its first entry; name
    /// the first entry that was changed, removed or inserted. Exits 1 when
    /// the chain is broken.
    Verify {
        /// Also compare with the chain heads of the day files `audit export`
        /// wrote to DIR (a rewritten chain no longer ends in them).
        #[arg(long, value_name = "DIR")]
        against: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write one day (UTC) of the access log to DIR/access-DAY.jsonl, one
    /// entry per line and the chain head last, read-only; a day already
    /// written is refused. Run daily (cron, a systemd timer) into storage
    /// that cannot be rewritten.
    Export {
        /// The day, YYYY-MM-DD (default: yesterday).
        #[arg(long)]
        day: Option<String>,
        #[arg(long, value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Create a client; its secret is printed once.
    Add {
        /// A name for the access log, e.g. school-oslo.
        name: String,
        /// Its legal basis: full, school, benefits, directory or one of
        /// [legal_bases] in folkhub.toml.
        #[arg(long)]
        basis: String,
        /// What it reads person data for (written with every read).
        #[arg(long)]
        purpose: String,
        /// How it authenticates: api-key (X-API-Key), bearer
        /// (Authorization: Bearer <secret>) or oauth2 (a JWT from an issuer
        /// of [[server.oauth2]]; give --issuer and --client-id).
        #[arg(long, default_value = "api-key")]
        auth: String,
        /// oauth2: the name of the issuer in [[server.oauth2]].
        #[arg(long)]
        issuer: Option<String>,
        /// oauth2: the client id its tokens carry (Maskinporten's
        /// `client_id`, HelseID's `client_id`).
        #[arg(long)]
        client_id: Option<String>,
        /// May read the admin routes (connectors, jobs, costs, conflicts,
        /// overrides, clients, the access log).
        #[arg(long)]
        admin: bool,
        /// Requests per second (per host).
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Persons it may be sent per minute (per host), over all routes.
        #[arg(long, default_value_t = 60_000)]
        persons_per_minute: u32,
        /// May have the registers asked about a person the store does not
        /// hold yet (fetch on miss) or about a stored one now (refresh);
        /// each lookup goes into the cost ledger under the client's name.
        #[arg(long)]
        fetch: bool,
    },
    /// Every client (never secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client: its secret stops working at once.
    Revoke {
        name: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum PersonCommand {
    /// A person's merged record with provenance.
    Get {
        id: String,
        /// The API's JSON answer for the same basis.
        #[arg(long)]
        json: bool,
        /// With --json: per-field provenance (the API's `provenance=true`).
        #[arg(long, requires = "json")]
        provenance: bool,
        /// As a FHIR R4 Patient.
        #[arg(long, conflicts_with = "json")]
        fhir: bool,
        /// Show what a reader with this legal basis sees (full, school,
        /// benefits, directory).
        #[arg(long, default_value = "full")]
        basis: String,
    },
    /// Every change of a person's record: what, from what to what, why.
    History {
        id: String,
        #[arg(long, default_value = "full")]
        basis: String,
    },
}

#[derive(Subcommand)]
enum ConnectorsCommand {
    /// Connectors in the registry and what is installed, with support state.
    List,
    /// Installed connectors with a newer release, deadline or sunset ahead.
    Outdated,
    /// Copy the vendor registries granted by URL (`[registry] vendor_urls`)
    /// into `[registry] mirror`: the manifest and every artifact, each
    /// checked against its sha256. A registry that cannot be fetched keeps
    /// its last good copy
    Fetch,
    /// Verify, compile and activate a release.
    Install {
        connector: String,
        /// Release version (default: the newest that is not a pre-release).
        #[arg(long)]
        version: Option<String>,
        /// Without --version: the newest release, pre-releases included.
        #[arg(long, conflicts_with = "version")]
        pre: bool,
        /// Keep this version until an admin changes it.
        #[arg(long)]
        pin: bool,
        #[arg(long, default_value = "installed from the CLI")]
        reason: String,
    },
    /// Move an installed connector to a newer release; with --dry-run, show
    /// the notes, differences and a shadow run without changing anything.
    Upgrade {
        connector: String,
        /// Target release version.
        #[arg(long)]
        to: String,
        /// Check and preview only.
        #[arg(long)]
        dry_run: bool,
        /// Persons in the dry run's shadow run (0: none).
        #[arg(long, default_value_t = 100)]
        sample: usize,
        /// Print the dry run as JSON.
        #[arg(long)]
        json: bool,
        /// KEY=VALUE: a config value for the new release in the dry run
        /// (e.g. the base-url its migration note asks for); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, default_value = "upgraded from the CLI")]
        reason: String,
    },
    /// Return to the release installed before the last version change.
    Rollback {
        connector: String,
        #[arg(long, default_value = "rolled back from the CLI")]
        reason: String,
    },
    /// Keep the installed release: no deadline action moves it.
    Pin {
        connector: String,
        #[arg(long, default_value = "pinned from the CLI")]
        reason: String,
    },
    /// Let deadline actions move the installed release again.
    Unpin {
        connector: String,
        #[arg(long, default_value = "unpinned from the CLI")]
        reason: String,
    },
    /// Every installation change of a connector: who, when, digests, why.
    History { connector: String },
    /// Hold a connector component to the contract against the simulator of
    /// its register, or recorded answers (--recorded): describe vs its manifest entry, lookups found, not
    /// found and malformed, a full batch, feed paging and resume, watch,
    /// enrichment, search; errors, granted hosts, time per call. Needs no
    /// store; exits 1 when a check fails.
    Check {
        /// The component (.wasm).
        #[arg(required_unless_present = "registry")]
        component: Option<PathBuf>,
        /// Its `[[release]]` entry as it will go into the registry
        /// manifest; without it, the component's describe() stands in.
        #[arg(long, conflicts_with = "registry")]
        manifest_entry: Option<PathBuf>,
        /// Check every release of this registry manifest instead.
        #[arg(long, conflicts_with = "component")]
        registry: Option<PathBuf>,
        /// The simulated register to run against when the connector's id
        /// is not one (folkeregister, krr, kartverket, spar, dvv).
        #[arg(long)]
        register: Option<String>,
        /// Run against these recorded answers of its register instead of a
        /// simulator (docs/connector-author-guide.md: a TOML file of
        /// exchanges and the IDs they find).
        #[arg(long, conflicts_with_all = ["register", "registry"])]
        recorded: Option<PathBuf>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OverridesCommand {
    /// Set a field of a person: `overrides add 03851598730 contact.email x@y.no --reason "..."`.
    Add {
        id: String,
        /// Catalogue path (docs/fields.md).
        path: String,
        /// The value: JSON (objects, lists, numbers, true/false) or text.
        value: String,
        #[arg(long)]
        reason: String,
        /// Last day is the day before this date (YYYY-MM-DD).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Open overrides (--all: ended ones too, with who ended them and why).
    List {
        #[arg(long)]
        all: bool,
    },
    /// End an override now.
    Remove {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// The latest runs, newest first.
    List {
        #[arg(long, default_value_t = 30)]
        limit: u32,
    },
    /// One run with its counts and errors (JSON).
    Show { run: i64 },
    /// Run a job of [jobs] in folkhub.toml now, with progress.
    Run { name: String },
    /// The feed-page log book of a connector: each page applied, by which
    /// host and run (kept when several hosts share a PostgreSQL store).
    Pages {
        connector: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Every identity link, with who undid it and why.
    Links,
    /// Persons reported without an ID who fit several stored persons.
    Review,
    /// Undo a link: both persons come back, and the pair is not merged again on its own.
    Undo {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum ReleasesCommand {
    /// Generate a publisher's Ed25519 key pair: the private key goes to
    /// --out (keep it secret), the public key is printed for operators'
    /// `[registry] trusted_keys`.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a release's manifest entry (its artifact digest included) and
    /// write `publisher` and `signature` into it.
    Sign {
        connector: String,
        version: String,
        /// The registry manifest to sign in.
        #[arg(long, default_value = "registry-manifest.toml")]
        manifest: PathBuf,
        /// The private key file `releases keygen` wrote.
        #[arg(long, env = "FOLKHUB_PUBLISHER_KEY")]
        key: PathBuf,
        /// The publisher name operators trust the key under.
        #[arg(long)]
        publisher: String,
    },
    /// Check every release's signature in a manifest against trusted keys:
    /// `--trust NAME=KEY` (repeatable), else folkhub.toml's
    /// `[registry] trusted_keys`, else the folkhub project's key.
    Verify {
        #[arg(long, default_value = "registry-manifest.toml")]
        manifest: PathBuf,
        #[arg(long = "trust", value_name = "NAME=KEY")]
        trust: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Generate an RSA key pair for Maskinporten JWT grants.
    GenerateKey {
        #[arg(long)]
        out: PathBuf,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Credentials {
            command: CredentialsCommand::GenerateKey { out },
        } => commands::credentials::generate_key(&out),
        Command::Releases {
            command: ReleasesCommand::Keygen { out },
        } => commands::releases::keygen(&out),
        Command::Connectors {
            command:
                ConnectorsCommand::Check {
                    component,
                    manifest_entry,
                    registry,
                    register,
                    recorded,
                    json,
                },
        } => {
            let target = match (&registry, &component) {
                (Some(registry), _) => commands::check::Target::Registry(registry),
                (None, Some(wasm)) => commands::check::Target::Component {
                    wasm,
                    entry: manifest_entry.as_deref(),
                    register: register.as_deref(),
                    recorded: recorded.as_deref(),
                },
                (None, None) => anyhow::bail!("name a component, or --registry MANIFEST"),
            };
            commands::check::run(target, json).await
        }
        Command::Releases {
            command:
                ReleasesCommand::Sign {
                    connector,
                    version,
                    manifest,
                    key,
                    publisher,
                },
        } => commands::releases::sign(&manifest, &connector, &version, &key, &publisher),
        Command::Releases {
            command: ReleasesCommand::Verify { manifest, trust },
        } => commands::releases::verify(&manifest, &trust, cli.config.as_deref()),
        Command::Openapi => {
            out!("{}", folkhub_api::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Version => {
            out!("folkhub {}", env!("CARGO_PKG_VERSION"));
            for s in folkhub_runtime::SUPPORTED {
                out!("  {}", s.describe());
            }
            Ok(())
        }
        Command::Migrate { check } => commands::migrate(cli.config.as_deref(), check).await,
        Command::Connectors {
            command: ConnectorsCommand::Fetch,
        } => {
            commands::connectors::fetch(&folkhub_manifest::Config::load(cli.config.as_deref())?)
                .await
        }
        command => {
            // Check what can be checked before opening anything.
            if let Command::Person {
                command: PersonCommand::Get { id, .. },
            } = &command
            {
                commands::person::parse_id(id)?;
            }
            let host = Host::from_file(cli.config.as_deref()).await?;
            match command {
                Command::Serve { listen } => {
                    let listen = listen.unwrap_or_else(|| host.config.server.listen.clone());
                    commands::serve::run(&host, &listen).await
                }
                Command::Sync {
                    connector,
                    full,
                    changes: _,
                    ids,
                    area,
                    guardians,
                } => {
                    if let Some(ages) = guardians {
                        return commands::sync::guardians(&host, &connector, &ages).await;
                    }
                    let mode = match ids {
                        Some(file) => {
                            folkhub_app::sync::Mode::Ids(commands::sync::read_ids(&file)?)
                        }
                        None if full => match area {
                            Some(area) => folkhub_app::sync::Mode::Area(area),
                            None => folkhub_app::sync::Mode::Full,
                        },
                        None => folkhub_app::sync::Mode::Changes,
                    };
                    commands::sync::run(&host, &connector, mode).await
                }
                Command::Person {
                    command:
                        PersonCommand::Get {
                            id,
                            json,
                            provenance,
                            fhir,
                            basis,
                        },
                } => {
                    let form = if fhir {
                        commands::person::Form::Fhir
                    } else if json {
                        commands::person::Form::Json { provenance }
                    } else {
                        commands::person::Form::Text
                    };
                    let basis = commands::person::basis(&host, &basis)?;
                    commands::person::get(&host, &id, form, &basis).await
                }
                Command::Person {
                    command: PersonCommand::History { id, basis },
                } => {
                    let basis = commands::person::basis(&host, &basis)?;
                    commands::person::history(&host, &id, &basis).await
                }
                Command::Connectors {
                    command: ConnectorsCommand::List,
                } => commands::connectors::list(&host).await,
                Command::Connectors {
                    command: ConnectorsCommand::Outdated,
                } => commands::connectors::outdated(&host).await,
                Command::Connectors {
                    command:
                        ConnectorsCommand::Install {
                            connector,
                            version,
                            pre,
                            pin,
                            reason,
                        },
                } => {
                    let version = match version {
                        None if pre => host
                            .manifest()
                            .newest_with_prereleases(&connector)
                            .map(|r| r.version.clone()),
                        other => other,
                    };
                    commands::connectors::install(
                        &host,
                        &connector,
                        version.as_deref(),
                        pin,
                        &actor(),
                        &reason,
                    )
                    .await
                }
                Command::Connectors {
                    command:
                        ConnectorsCommand::Upgrade {
                            connector,
                            to,
                            dry_run,
                            sample,
                            json,
                            set,
                            reason,
                        },
                } => {
                    if dry_run {
                        let mut overrides = std::collections::BTreeMap::new();
                        for pair in &set {
                            let Some((k, v)) = pair.split_once('=') else {
                                anyhow::bail!(
                                    "--set {pair:?}: expected KEY=VALUE, e.g. --set base-url=https://host/rest/v2"
                                );
                            };
                            overrides.insert(k.trim().to_string(), v.trim().to_string());
                        }
                        let report = folkhub_app::upgrade::dry_run(
                            &host, &connector, &to, sample, &overrides,
                        )
                        .await?;
                        if json {
                            out!("{}", serde_json::to_string_pretty(&report)?);
                        } else {
                            commands::upgrade::print(&report);
                        }
                        Ok(())
                    } else {
                        if !set.is_empty() {
                            anyhow::bail!(
                                "--set is for --dry-run only: put the new values in [connectors.{connector}.config] of folkhub.toml, then upgrade"
                            );
                        }
                        commands::upgrade::upgrade(&host, &connector, &to, &actor(), &reason).await
                    }
                }
                Command::Connectors {
                    command: ConnectorsCommand::Rollback { connector, reason },
                } => commands::upgrade::rollback(&host, &connector, &actor(), &reason).await,
                Command::Connectors {
                    command: ConnectorsCommand::Pin { connector, reason },
                } => commands::upgrade::pin(&host, &connector, true, &actor(), &reason).await,
                Command::Connectors {
                    command: ConnectorsCommand::Unpin { connector, reason },
                } => commands::upgrade::pin(&host, &connector, false, &actor(), &reason).await,
                Command::Connectors {
                    command: ConnectorsCommand::History { connector },
                } => commands::upgrade::history(&host, &connector).await,
                Command::Overrides {
                    command:
                        OverridesCommand::Add {
                            id,
                            path,
                            value,
                            reason,
                            expires,
                        },
                } => {
                    commands::overrides::add(
                        &host,
                        &id,
                        &path,
                        &value,
                        &reason,
                        expires.as_deref(),
                        &actor(),
                    )
                    .await
                }
                Command::Overrides {
                    command: OverridesCommand::List { all },
                } => commands::overrides::list(&host, all).await,
                Command::Overrides {
                    command: OverridesCommand::Remove { id, reason },
                } => commands::overrides::remove(&host, id, &reason, &actor()).await,
                Command::Conflicts => commands::overrides::conflicts(&host).await,
                Command::Jobs {
                    command: JobsCommand::List { limit },
                } => commands::jobs::list(&host, limit).await,
                Command::Jobs {
                    command: JobsCommand::Show { run },
                } => commands::jobs::show(&host, run).await,
                Command::Jobs {
                    command: JobsCommand::Pages { connector, limit },
                } => commands::jobs::pages(&host, &connector, limit).await,
                Command::Jobs {
                    command: JobsCommand::Run { name },
                } => folkhub_app::jobs::run_job(&host, &name)
                    .await
                    .map(|outcome| out!("{outcome}")),
                Command::Costs { month } => commands::jobs::costs(&host, month.as_deref()).await,
                Command::Identity {
                    command: IdentityCommand::Links,
                } => commands::overrides::links(&host).await,
                Command::Identity {
                    command: IdentityCommand::Review,
                } => commands::overrides::reviews(&host).await,
                Command::Identity {
                    command: IdentityCommand::Undo { id, reason },
                } => commands::overrides::undo_link(&host, id, &reason, &actor()).await,
                Command::Clients {
                    command:
                        ClientsCommand::Add {
                            name,
                            basis,
                            purpose,
                            auth,
                            issuer,
                            client_id,
                            admin,
                            rate,
                            persons_per_minute,
                            fetch,
                        },
                } => commands::clients::add(
                    &host,
                    commands::clients::AddClient {
                        name: &name,
                        basis: &basis,
                        purpose: &purpose,
                        auth: &auth,
                        oauth2: issuer.as_deref().zip(client_id.as_deref()),
                        admin,
                        rate,
                        persons_per_minute,
                        may_fetch: fetch,
                    },
                    &actor(),
                )
                .await
                .map(|_| ()),
                Command::Clients {
                    command: ClientsCommand::List { json },
                } => commands::clients::list(&host, json).await,
                Command::Clients {
                    command: ClientsCommand::Revoke { name, reason },
                } => commands::clients::revoke(&host, &name, &reason, &actor()).await,
                Command::Follows { command } => match command {
                    FollowsCommand::List { set, json } => {
                        commands::follows::list(&host, &set.into_set(), json).await
                    }
                    FollowsCommand::Add { set, ids } => {
                        commands::follows::change(&host, &set.into_set(), &ids, false, &actor())
                            .await
                    }
                    FollowsCommand::Remove { set, ids } => {
                        commands::follows::change(&host, &set.into_set(), &ids, true, &actor())
                            .await
                    }
                    FollowsCommand::Sweep => commands::follows::sweep(&host).await,
                    FollowsCommand::Deletions { id, limit, json } => {
                        commands::follows::deletions(&host, id.as_deref(), limit, json).await
                    }
                },
                Command::Webhooks { command } => match command {
                    WebhooksCommand::List { json } => commands::webhooks::list(&host, json).await,
                    WebhooksCommand::Deliveries { id, limit, json } => {
                        commands::webhooks::deliveries(&host, id, limit, json).await
                    }
                    WebhooksCommand::Disable { id, reason } => {
                        commands::webhooks::disable(&host, id, &reason, &actor()).await
                    }
                },
                Command::Populations { command } => match command {
                    PopulationsCommand::Add {
                        name,
                        purpose,
                        clients,
                    } => {
                        commands::follows::add_population(
                            &host,
                            &name,
                            &purpose,
                            &clients,
                            &actor(),
                        )
                        .await
                    }
                    PopulationsCommand::List { json } => {
                        commands::follows::populations(&host, json).await
                    }
                    PopulationsCommand::Grant { name, client } => {
                        commands::follows::grant(&host, &name, &client, true).await
                    }
                    PopulationsCommand::Revoke { name, client } => {
                        commands::follows::grant(&host, &name, &client, false).await
                    }
                    PopulationsCommand::Drop { name } => {
                        commands::follows::drop_population(&host, &name).await
                    }
                },
                Command::Audit {
                    command: Some(AuditCommand::Verify { against, json }),
                    ..
                } => commands::audit::verify(&host, against.as_deref(), json).await,
                Command::Audit {
                    command: Some(AuditCommand::Export { day, dir }),
                    ..
                } => commands::audit::export(&host, day.as_deref(), &dir).await,
                Command::Audit {
                    command: None,
                    client,
                    person,
                    since,
                    until,
                    limit,
                    json,
                } => {
                    commands::clients::audit(
                        &host,
                        commands::clients::AuditFilter {
                            client: client.as_deref(),
                            person: person.as_deref(),
                            since: since.as_deref(),
                            until: until.as_deref(),
                            limit,
                            json,
                        },
                    )
                    .await
                }
                Command::Rebuild { check } => commands::person::rebuild(&host, check).await,
                Command::Credentials { .. }
                | Command::Releases { .. }
                | Command::Connectors {
                    command: ConnectorsCommand::Check { .. } | ConnectorsCommand::Fetch,
                }
                | Command::Version
                | Command::Openapi
                | Command::Migrate { .. } => Ok(()),
            }
        }
    }
}

/// Who runs the command, for the audit trail.
impl SetArgs {
    fn into_set(self) -> folkhub_store::FollowSet {
        match (self.client, self.population) {
            (Some(client), _) => folkhub_store::FollowSet::Client(client),
            (None, Some(population)) => folkhub_store::FollowSet::Population(population),
            // clap requires one of the two.
            (None, None) => folkhub_store::FollowSet::Client(String::new()),
        }
    }
}

fn actor() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

/// Logs to stderr, filtered by `FOLKHUB_LOG` (default `warn`): one JSON
/// object per event with its spans (run, connector, request) when
/// `FOLKHUB_LOG_FORMAT=json`, else text, coloured only at a terminal.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FOLKHUB_LOG")
        .unwrap_or_else(|_| "warn".into());
    let json = std::env::var("FOLKHUB_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
