//! `folkhub serve`: one call into [`folkhub_app::serve`], printing where
//! it listens.

use folkhub_app::Host;
use folkhub_app::serve::Listening;

pub async fn run(host: &Host, listen: &str) -> anyhow::Result<()> {
    folkhub_app::serve::run(host, listen, |at: &Listening| {
        let scheme = if at.tls { "https" } else { "http" };
        out!("folkhub API on {scheme}://{}/v1 (Ctrl-C stops)", at.api);
        if let Some(admin) = at.admin {
            out!("folkhub admin listener (/metrics, /v1/health) on {scheme}://{admin}");
        }
    })
    .await
}
