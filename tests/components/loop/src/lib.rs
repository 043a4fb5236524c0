//! Hostile test component: `lookup` never returns. The host must stop it at
//! the call deadline and keep serving. Asked for `panic`, it prints a line
//! to stdout and panics: the panic message (on stderr) must reach the
//! host's error and log.
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
        if ids.first().map(String::as_str) == Some("quick") {
            return Ok(vec![]);
        }
        if ids.first().map(String::as_str) == Some("panic") {
            println!("about to fail on purpose");
            panic!("hostile panic: the register said something unreadable");
        }
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
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
