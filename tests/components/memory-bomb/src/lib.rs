//! Hostile test component: `lookup` allocates without end. The host must
//! stop it at the memory cap.
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
    fn lookup_batch(_ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![7u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
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
