//! A PostgreSQL cluster of one's own on loopback, for tests and the demo:
//! `initdb` into a directory, the server on a free port of 127.0.0.1 with
//! its socket in that directory, databases made with `createdb`. Nothing
//! here assumes a server somebody else started.
//!
//! Plain `std` (xtask includes this file too). PostgreSQL refuses to run
//! as root; as root the programs run as the `postgres` user that Debian's
//! package creates, and the directory is handed to it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The directory holding `initdb`, `pg_ctl` and `createdb`: `pg_config
/// --bindir`, else the newest `/usr/lib/postgresql/N/bin` (Debian keeps
/// them off the PATH), else whatever the PATH has.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    Err(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: \
         `cargo xtask test` installs Debian's `postgresql` package, or run \
         `apt-get install postgresql`"
            .into(),
    )
}

/// A free TCP port on loopback (the OS picks it).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// `postgres`'s user and group ids, for handing it the directory.
fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("id {flag} postgres: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                "running as root, and there is no `postgres` user to run PostgreSQL as \
                 (PostgreSQL refuses root; Debian's `postgresql` package creates the user)"
                    .to_string()
            })
    };
    Ok((id("-u")?, id("-g")?))
}

/// A cluster: its directory, port and programs.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

impl Cluster {
    /// Starts a cluster in `dir` (initialised first when empty) on `port`.
    /// `fast` turns durability off (fsync, synchronous commit): for
    /// throwaway test clusters only.
    pub fn start(dir: &Path, port: u16, fast: bool) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let as_postgres = running_as_root();
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("handing {} to postgres: {e}", dir.display()))?;
        }
        let cluster = Cluster {
            dir,
            port,
            bin,
            as_postgres,
        };
        let data = cluster.dir.join("data");
        if !data.join("PG_VERSION").exists() {
            cluster.run(
                "initdb",
                &[
                    "-D",
                    &data.display().to_string(),
                    "-A",
                    "trust",
                    "-U",
                    "folkhub",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )?;
        }
        let mut options = format!(
            "-p {port} -h 127.0.0.1 -k {} -c max_connections=200",
            cluster.dir.display()
        );
        if fast {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &cluster.dir.join("server.log").display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            Err(format!(
                "{program} {} failed: {}{}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
            ))
        }
    }

    /// The URL of a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://folkhub@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database (an error when it exists).
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.createdb(&[name])
    }

    /// Creates database `name` as a copy of `template` (which nobody may
    /// be connected to).
    pub fn copy_database(&self, template: &str, name: &str) -> Result<String, String> {
        self.createdb(&["-T", template, name])
    }

    fn createdb(&self, args: &[&str]) -> Result<String, String> {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-U", "folkhub"];
        all.extend_from_slice(args);
        self.run("createdb", &all)?;
        Ok(self.url(args.last().copied().unwrap_or_default()))
    }

    /// Stops the server (fast shutdown: sessions are ended).
    pub fn stop(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Stops the server and removes the directory when process `pid` ends
    /// (however it ends): a watcher process polls it once a second.
    pub fn stop_when_gone(&self, pid: u32) -> Result<(), String> {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{}'",
            self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("starting the cluster's watcher: {e}"))
    }
}

/// This process's own cluster, started on first use in a new directory
/// under the temp dir and removed when the process ends.
pub fn shared() -> Result<&'static Cluster, String> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!(
                "folkhub-pg-{}-{}",
                std::process::id(),
                free_port()?
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let cluster = Cluster::start(&dir, free_port()?, true)?;
            cluster.stop_when_gone(std::process::id())?;
            Ok(cluster)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A new, empty database in this process's cluster: its URL.
pub fn fresh_database() -> Result<String, String> {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let cluster = shared()?;
    cluster.create_database(&format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}
