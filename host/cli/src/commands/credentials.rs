//! `folkhub credentials generate-key`: an RSA key pair for Maskinporten JWT
//! grants. The public half is what the operator registers with
//! Maskinporten (or gives the simulator with `--trust-client`).

use std::path::Path;

use anyhow::Context;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

pub fn generate_key(out: &Path) -> anyhow::Result<()> {
    let key =
        rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).context("generating an RSA key")?;
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the private key")?;
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encoding the public key")?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, private.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600))?;
    }
    let public_path = out.with_extension("pub.pem");
    std::fs::write(&public_path, public.as_bytes())
        .with_context(|| format!("writing {}", public_path.display()))?;
    out!(
        "wrote {} (private, keep it) and {} (public, register it)",
        out.display(),
        public_path.display()
    );
    Ok(())
}
