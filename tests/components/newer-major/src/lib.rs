//! Test component built against `folkhub:connector@3.0.0` (1.0.0's text
//! under another version), a major this host does not run. Install must
//! refuse it, naming its version and the host's.

#[allow(unsafe_code, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "connector" });
}

use bindings::exports::folkhub::connector::source::{
    self, ChangePage, ConnectorError, Description, LookupResult,
};

struct Other;

impl source::Guest for Other {
    fn describe() -> Description {
        Description {
            source: "other".into(),
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

// wit-bindgen's export glue is `unsafe`; it alone may be.
#[allow(unsafe_code)]
mod export {
    use super::Other;
    crate::bindings::export!(Other with_types_in crate::bindings);
}
