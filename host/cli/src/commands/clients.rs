//! `folkhub clients add|list|revoke` and `folkhub audit`: who may read the
//! API, and who read what.

use anyhow::{Context, bail};
use folkhub_store::{AccessQuery, ClientAuth, NewClient};

use crate::host::Host;

/// What `clients add` needs.
pub struct AddClient<'a> {
    pub name: &'a str,
    pub basis: &'a str,
    pub purpose: &'a str,
    pub auth: &'a str,
    /// oauth2: the issuer's name and the client id in its tokens.
    pub oauth2: Option<(&'a str, &'a str)>,
    pub admin: bool,
    pub rate: u32,
    pub persons_per_minute: u32,
}

/// Creates a client and prints its secret (once; only its hash is stored).
/// Returns the secret.
pub async fn add(host: &Host, new: AddClient<'_>, actor: &str) -> anyhow::Result<String> {
    let name = new.name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("client name {name:?}: use letters, digits, `-`, `_` and `.` (e.g. school-oslo)");
    }
    let bases = host.config.legal_bases();
    if !bases.contains_key(new.basis) {
        bail!(
            "--basis {:?} is not a legal basis; use one of {} (or define one in [legal_bases] of folkhub.toml)",
            new.basis,
            bases.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if new.purpose.trim().len() < 3 {
        bail!(
            "--purpose: say what the client reads person data for (it is written to the access log with every read)"
        );
    }
    let auth = ClientAuth::parse(new.auth)
        .with_context(|| format!("--auth {:?}: use api-key, bearer or oauth2", new.auth))?;
    let oauth2 = match (auth, new.oauth2) {
        (ClientAuth::OAuth2, Some((issuer, client_id))) => {
            if !host.config.server.oauth2.iter().any(|i| i.name == issuer) {
                bail!(
                    "--issuer {issuer:?} is not an issuer of [[server.oauth2]] in folkhub.toml; \
                     configured: {}",
                    host.config
                        .server
                        .oauth2
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if client_id.trim().is_empty() {
                bail!("--client-id: the client id its tokens carry");
            }
            Some(ClientAuth::oauth2_subject(issuer, client_id.trim()))
        }
        (ClientAuth::OAuth2, None) => {
            bail!("--auth oauth2 needs --issuer NAME and --client-id ID (the token's client id)")
        }
        (_, Some(_)) => bail!("--issuer and --client-id are for --auth oauth2"),
        _ => None,
    };
    if new.rate == 0 {
        bail!("--rate must be at least 1 request per second");
    }
    if new.persons_per_minute == 0 {
        bail!("--persons-per-minute must be at least 1");
    }
    let secret = folkhub_api::auth::new_secret();
    let client = host
        .store()
        .add_client(NewClient {
            name: name.to_string(),
            auth,
            secret_sha256: oauth2
                .clone()
                .unwrap_or_else(|| folkhub_api::auth::hash_secret(&secret)),
            basis: new.basis.to_string(),
            purpose: new.purpose.trim().to_string(),
            admin: new.admin,
            rate_limit: new.rate,
            persons_per_minute: new.persons_per_minute,
            created_by: actor.to_string(),
        })
        .await?;
    println!(
        "client {} created: basis {}, purpose {:?}{}, {} requests/s, {} persons/min{}",
        client.name,
        client.basis,
        client.purpose,
        if client.admin { ", admin" } else { "" },
        client.rate_limit,
        client.persons_per_minute,
        if client.auth == ClientAuth::OAuth2 {
            "; it sends Authorization: Bearer <a token from its issuer>"
        } else {
            ""
        }
    );
    let header = match client.auth {
        ClientAuth::ApiKey => format!("X-API-Key: {secret}"),
        ClientAuth::Bearer => format!("Authorization: Bearer {secret}"),
        ClientAuth::OAuth2 => return Ok(String::new()),
    };
    println!("its secret, shown only now (folkhub keeps only a hash):\n  {header}");
    Ok(secret)
}

pub async fn list(host: &Host, json: bool) -> anyhow::Result<()> {
    let clients = host.store().clients().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&clients)?);
        return Ok(());
    }
    if clients.is_empty() {
        println!("no clients; create one with `folkhub clients add NAME --basis B --purpose P`");
    }
    for c in clients {
        let state = match (&c.revoked_at, &c.revoked_reason) {
            (Some(at), reason) => format!(
                "revoked {} by {}: {}",
                at.format("%Y-%m-%d"),
                c.revoked_by.as_deref().unwrap_or("?"),
                reason.as_deref().unwrap_or("")
            ),
            (None, _) => "active".into(),
        };
        println!(
            "{:<20} {:<9} basis {:<10} {:>5}/s {}  {:?}  created {} by {}  {state}",
            c.name,
            c.auth.as_str(),
            c.basis,
            c.rate_limit,
            if c.admin { "admin" } else { "     " },
            c.purpose,
            c.created_at.format("%Y-%m-%d"),
            c.created_by
        );
    }
    Ok(())
}

pub async fn revoke(host: &Host, name: &str, reason: &str, actor: &str) -> anyhow::Result<()> {
    if !host.store().revoke_client(name, actor, reason).await? {
        bail!("no active client {name:?}; see `folkhub clients list`");
    }
    println!("client {name} revoked; its secret no longer opens the API");
    Ok(())
}

/// Filters of `folkhub audit`.
pub struct AuditFilter<'a> {
    pub client: Option<&'a str>,
    pub person: Option<&'a str>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub limit: u32,
    pub json: bool,
}

fn day(text: &str, flag: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| anyhow::anyhow!("{flag} {text:?}: a date YYYY-MM-DD or an RFC 3339 time"))
}

/// `folkhub audit`: the access log, oldest first.
pub async fn audit(host: &Host, f: AuditFilter<'_>) -> anyhow::Result<()> {
    let person = match f.person {
        None => None,
        Some(id) => {
            let parsed = super::person::parse_id(id)?;
            match host.store().person(&parsed.value).await? {
                Some(p) => Some(p.key),
                None => bail!("no person with {id} is in the store"),
            }
        }
    };
    let mut query = AccessQuery {
        client: f.client.map(str::to_string),
        person,
        since: f.since.map(|s| day(s, "--since")).transpose()?,
        until: f.until.map(|s| day(s, "--until")).transpose()?,
        after: 0,
        limit: f.limit.min(10_000),
    };
    let mut shown = 0;
    let mut all = Vec::new();
    loop {
        let page = host.store().access_log(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = last.seq;
        let more = page.len() as u32 == query.limit;
        for e in page {
            if shown >= f.limit {
                break;
            }
            shown += 1;
            if f.json {
                all.push(e);
            } else {
                println!(
                    "{:>8}  {}  {:<16} {:<9} person {:<7} {:<28} {} field(s)  {:?}",
                    e.seq,
                    e.entry.at.format("%Y-%m-%d %H:%M:%S"),
                    e.entry.client,
                    e.entry.basis,
                    e.entry.person,
                    e.entry.endpoint,
                    e.entry.fields.len(),
                    e.entry.purpose
                );
            }
        }
        if !more || shown >= f.limit {
            break;
        }
    }
    if f.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if shown == 0 {
        println!("no access log entries match");
    }
    Ok(())
}
