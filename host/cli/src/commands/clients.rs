//! `folkhub clients add|list|revoke` and `folkhub audit`: who may read the
//! API, and who read what.

use anyhow::bail;
use folkhub_store::{AccessQuery, ClientAuth};

use folkhub_app::Host;
pub use folkhub_app::clients::AddClient;

/// Creates a client and prints its secret (once; only its hash is stored).
/// Returns the secret.
pub async fn add(host: &Host, new: AddClient<'_>, actor: &str) -> anyhow::Result<String> {
    let (client, secret) = folkhub_app::clients::add(host, new, actor).await?;
    let secret = secret.unwrap_or_default();
    out!(
        "client {} created: basis {}, purpose {:?}{}{}, {} requests/s, {} persons/min{}",
        client.name,
        client.basis,
        client.purpose,
        if client.admin { ", admin" } else { "" },
        if client.may_fetch {
            ", may fetch from the registers"
        } else {
            ""
        },
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
    out!("its secret, shown only now (folkhub keeps only a hash):\n  {header}");
    Ok(secret)
}

pub async fn list(host: &Host, json: bool) -> anyhow::Result<()> {
    let clients = host.store().clients().await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&clients)?);
        return Ok(());
    }
    if clients.is_empty() {
        out!("no clients; create one with `folkhub clients add NAME --basis B --purpose P`");
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
        out!(
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
    out!("client {name} revoked; its secret no longer opens the API");
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
                out!(
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
        out!("{}", serde_json::to_string_pretty(&all)?);
    } else if shown == 0 {
        out!("no access log entries match");
    }
    Ok(())
}
