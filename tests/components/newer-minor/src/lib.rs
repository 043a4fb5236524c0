//! Test component built against a would-be `folkhub:connector@1.2.0` (a copy
//! of 1.0.0 plus an exported `search` interface). A host that supports only
//! 1.0 must refuse it at install, naming both versions.

#[allow(unsafe_code, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "connector" });
}

use bindings::exports::folkhub::connector::search;
use bindings::exports::folkhub::connector::source::{
    self, ChangePage, ConnectorError, Description, LookupResult,
};

struct Newer;

impl source::Guest for Newer {
    fn describe() -> Description {
        Description {
            source: "newer".into(),
            upstream_versions: vec![],
            fields: vec![],
            capabilities: vec![],
            max_batch: 1,
        }
    }
    fn lookup_batch(_ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
        Ok(vec![])
    }
    fn changes(_cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
        Ok(ChangePage {
            changes: vec![],
            next_cursor: "0".into(),
            caught_up: true,
        })
    }
}

impl search::Guest for Newer {
    fn search_by_name(_name: String, _birth_date: String) -> Vec<String> {
        vec![]
    }
}

// wit-bindgen's export glue is `unsafe`; it alone may be.
#[allow(unsafe_code)]
mod export {
    use super::Newer;
    crate::bindings::export!(Newer with_types_in crate::bindings);
}
