//! Small helpers to write and read the SOAP/XML of SPAR and VTJ.

pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

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

/// `<name>text</name>` with the text escaped.
pub fn el(name: &str, text: &str) -> String {
    format!("<{name}>{}</{name}>", esc(text))
}

/// A SOAP 1.1 envelope around `body`.
pub fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"{SOAP_ENV}\"><soap:Body>{body}</soap:Body></soap:Envelope>"
    )
}

/// A SOAP 1.1 fault.
pub fn soap_fault(code: &str, message: &str) -> String {
    envelope(&format!(
        "<soap:Fault><faultcode>{}</faultcode><faultstring>{}</faultstring></soap:Fault>",
        esc(code),
        esc(message)
    ))
}

/// The first element of the SOAP body, when the document is a SOAP 1.1 envelope.
pub fn soap_body<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> Option<roxmltree::Node<'a, 'i>> {
    let root = doc.root_element();
    if root.tag_name().namespace() != Some(SOAP_ENV) || root.tag_name().name() != "Envelope" {
        return None;
    }
    root.children()
        .find(|n| {
            n.is_element()
                && n.tag_name().name() == "Body"
                && n.tag_name().namespace() == Some(SOAP_ENV)
        })?
        .children()
        .find(|n| n.is_element())
}

/// Text of the first descendant element `name` in namespace `ns`.
pub fn child_text<'a>(node: roxmltree::Node<'a, '_>, ns: &str, name: &str) -> Option<&'a str> {
    node.descendants()
        .find(|n| {
            n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
        })
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
