//! SOAP 1.1 for connectors (SPAR, VTJ): build envelopes, post them, and
//! read answers by namespace URI (never by prefix: registers vary them).
//!
//! Secrets the register wants inside the body (VTJ `Salasana`, SPAR
//! customer numbers) are written as `{{secret:NAME}}`; the host replaces
//! them on the way out with what the operator configured, so the values
//! never enter the sandbox.

use roxmltree::{Document, Node};

use crate::ConnectorError;
use crate::http::Response;

pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// A placeholder the host replaces with the operator's secret `name`.
pub fn secret(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// Escapes text for an XML element or attribute.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A SOAP 1.1 envelope around `body` (already XML).
pub fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"{SOAP_ENV}\"><soap:Body>{body}</soap:Body></soap:Envelope>"
    )
}

/// Posts an envelope with its SOAPAction; the status is checked after
/// SOAP faults are read, so a `soap:Client` fault is bad input, not an outage.
pub fn post(url: &str, action: &str, envelope: &str) -> Result<Response, ConnectorError> {
    let quoted = format!("\"{action}\"");
    let response = crate::http::send(
        "POST",
        url,
        &[
            ("content-type", "text/xml; charset=utf-8"),
            ("accept", "text/xml"),
            ("soapaction", &quoted),
        ],
        Some(envelope.as_bytes()),
    )?;
    classify(response, url)
}

/// Turns SOAP faults and HTTP errors into the contract's errors.
pub fn classify(response: Response, url: &str) -> Result<Response, ConnectorError> {
    if response.status == 500
        && let Ok(text) = std::str::from_utf8(&response.body)
        && let Ok(doc) = Document::parse(text)
        && let Some((code, message)) = fault(&doc)
    {
        let local = code.rsplit(':').next().unwrap_or(&code).to_string();
        return Err(match local.as_str() {
            "Client" => ConnectorError::BadInput(format!("{url}: SOAP fault {code}: {message}")),
            _ => {
                ConnectorError::UpstreamUnavailable(format!("{url}: SOAP fault {code}: {message}"))
            }
        });
    }
    if response.status == 404 {
        return Err(ConnectorError::UpstreamUnavailable(format!(
            "{url} answered 404: is base-url right?"
        )));
    }
    response.check()
}

/// The body as UTF-8 XML text, or a clear error (HTML error pages, binary).
pub fn text<'r>(response: &'r Response, what: &str) -> Result<&'r str, ConnectorError> {
    let text = std::str::from_utf8(&response.body).map_err(|_| {
        ConnectorError::MalformedResponse(format!("{what}: the answer is not UTF-8"))
    })?;
    if response
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().contains("html"))
    {
        return Err(ConnectorError::MalformedResponse(format!(
            "{what}: got an HTML page instead of XML: {:?}",
            &text[..text.len().min(120)]
        )));
    }
    Ok(text)
}

/// Parses XML or says where it broke.
pub fn parse<'i>(text: &'i str, what: &str) -> Result<Document<'i>, String> {
    Document::parse(text).map_err(|e| {
        format!(
            "{what}: not well-formed XML ({e}); the body starts with {:?}",
            &text[..text.len().min(120)]
        )
    })
}

/// `(faultcode, faultstring)` when the document is a SOAP fault.
pub fn fault(doc: &Document) -> Option<(String, String)> {
    let node = body(doc).ok()?;
    if node.tag_name().name() != "Fault" || node.tag_name().namespace() != Some(SOAP_ENV) {
        return None;
    }
    let text_of = |name: &str| {
        node.children()
            .find(|n| n.is_element() && n.tag_name().name() == name)
            .and_then(|n| n.text())
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    Some((text_of("faultcode"), text_of("faultstring")))
}

/// The first element of the SOAP 1.1 body.
pub fn body<'a, 'i>(doc: &'a Document<'i>) -> Result<Node<'a, 'i>, String> {
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" || root.tag_name().namespace() != Some(SOAP_ENV) {
        return Err(format!(
            "expected a SOAP 1.1 Envelope in {SOAP_ENV}, got {}{}",
            root.tag_name()
                .namespace()
                .map(|n| format!("{{{n}}}"))
                .unwrap_or_default(),
            root.tag_name().name()
        ));
    }
    root.children()
        .find(|n| {
            n.is_element()
                && n.tag_name().name() == "Body"
                && n.tag_name().namespace() == Some(SOAP_ENV)
        })
        .ok_or("the envelope has no Body")?
        .children()
        .find(|n| n.is_element())
        .ok_or_else(|| "the SOAP Body is empty".to_string())
}

/// The first child element `name` in namespace `ns`.
pub fn child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| {
        n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
    })
}

/// Every child element `name` in namespace `ns`.
pub fn children<'a, 'i>(
    node: Node<'a, 'i>,
    ns: &str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + use<'a, 'i> {
    let ns = ns.to_string();
    node.children().filter(move |n| {
        n.is_element()
            && n.tag_name().name() == name
            && n.tag_name().namespace() == Some(ns.as_str())
    })
}

/// Trimmed, non-empty text of the child element `name`.
pub fn child_text<'a>(node: Node<'a, '_>, ns: &str, name: &str) -> Option<&'a str> {
    child(node, ns, name)
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Follows a path of child elements in one namespace.
pub fn path<'a, 'i>(node: Node<'a, 'i>, ns: &str, steps: &[&str]) -> Option<Node<'a, 'i>> {
    let mut at = node;
    for step in steps {
        at = child(at, ns, step)?;
    }
    Some(at)
}

/// Trimmed, non-empty text at a path of child elements.
pub fn path_text<'a>(node: Node<'a, '_>, ns: &str, steps: &[&str]) -> Option<&'a str> {
    path(node, ns, steps)
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
