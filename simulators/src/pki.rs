//! Throwaway certificates for the simulators' TLS endpoints (SPAR wants
//! mutual TLS with an organisation certificate). Generated at start into a
//! directory of the caller's choosing; nothing here is ever committed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test CA, the server certificate it issued, and one client certificate.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    /// PEM of the CA certificate (what a client trusts: `tls_roots`).
    pub ca_file: PathBuf,
    /// The client certificate (organisation certificate) and its key.
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    /// A client certificate from a different CA, which the server refuses.
    pub stranger_cert_file: PathBuf,
    pub stranger_key_file: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

/// Writes a PEM file readable by its owner only (private keys among them;
/// certificates too, as nothing else needs to read them).
fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn ca(name: &str) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}

fn client(
    org: &str,
    issuer: &rcgen::Certificate,
    issuer_key: &KeyPair,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, org);
    params
        .distinguished_name
        .push(DnType::OrganizationName, org);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer, issuer_key)?;
    Ok((cert, key))
}

impl Pki {
    /// Generates everything into `dir` (created if missing).
    pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (ca_cert, ca_key) = ca("folkhub-sim test CA (throwaway)")?;
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "folkhub-sim");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key)?;
        let (client_cert, client_key) = client("Folkhub Test AB", &ca_cert, &ca_key)?;
        let (other_ca, other_key) = ca("someone else's CA")?;
        let (stranger_cert, stranger_key) = client("Stranger AB", &other_ca, &other_key)?;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )?;
        let _: &CertificateDer = server_cert.der();
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_file: write(dir, "ca.pem", &ca_cert.pem())?,
            client_cert_file: write(dir, "client.pem", &client_cert.pem())?,
            client_key_file: write(dir, "client-key.pem", &client_key.serialize_pem())?,
            stranger_cert_file: write(dir, "stranger.pem", &stranger_cert.pem())?,
            stranger_key_file: write(dir, "stranger-key.pem", &stranger_key.serialize_pem())?,
            server: Arc::new(server),
        })
    }
}
