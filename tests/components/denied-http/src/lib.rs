//! Hostile test component: `lookup` calls the URL given as the first ID
//! (a host nobody granted). The host must refuse with `denied`.
use folkhub_connector_sdk::{ChangePage, ConnectorError, Description, LookupResult, bindings};

struct Hostile;

fn describe() -> Description {
    Description {
        source: "hostile".into(),
        upstream_versions: vec![],
        fields: vec![],
        capabilities: vec!["lookup".into()],
        max_batch: 10,
    }
}

impl bindings::exports::folkhub::connector::source::Guest for Hostile {
    fn describe() -> Description {
        describe()
    }
    fn lookup_batch(ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
        let url = ids
            .first()
            .cloned()
            .unwrap_or_else(|| "https://example.com/".into());
        let response = folkhub_connector_sdk::http::get(&url, &[])?;
        Err(ConnectorError::Other(format!(
            "the host let a request through: HTTP {}",
            response.status
        )))
    }
    fn changes(_cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
        Ok(ChangePage {
            changes: vec![],
            next_cursor: "0".into(),
            caught_up: true,
        })
    }
}

folkhub_connector_sdk::no_enrich!(Hostile);
folkhub_connector_sdk::no_watch!(Hostile);
// wit-bindgen's export glue is `unsafe`; it alone may be.
#[allow(unsafe_code)]
mod export {
    use super::Hostile;
    folkhub_connector_sdk::export_connector!(Hostile);
}
