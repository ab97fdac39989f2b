//! Throw-away TLS material made with the `openssl` CLI: a CA and a server certificate for
//! `localhost` / `127.0.0.1` signed by it, for servers that must only accept TLS clients.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::system::check_output;

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate clients trust (`sslrootcert`).
    pub ca_cert: PathBuf,
    /// The server certificate (SAN `DNS:localhost`, `IP:127.0.0.1`), signed by the CA; usable
    /// as a client certificate too (NATS routes authenticate each other with it).
    pub server_cert: PathBuf,
    /// The server's private key, mode 0600.
    pub server_key: PathBuf,
}

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

const SERVER_EXT: &str = "\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Generates a CA (P-256 key and self-signed certificate) and a server certificate signed by
/// it into `dir`, valid for a few days.
pub fn generate_tls(dir: &Path) -> anyhow::Result<TlsFiles> {
    use std::os::unix::fs::PermissionsExt as _;

    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let cnf = dir.join("openssl.cnf");
    let ext = dir.join("server.ext");
    std::fs::write(&cnf, OPENSSL_CNF).context("write openssl.cnf")?;
    std::fs::write(&ext, SERVER_EXT).context("write server.ext")?;
    let files = TlsFiles {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    let ca_key = dir.join("ca.key");
    let csr = dir.join("server.csr");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];

    openssl("create the test CA", dir, |c| {
        c.args([
            "req",
            "-x509",
            "-days",
            "3",
            "-subj",
            "/CN=pg-flo-e2e test CA",
        ])
        .args(ec)
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&files.ca_cert)
        .arg("-config")
        .arg(&cnf)
        .args(["-extensions", "v3_ca"]);
    })?;
    openssl("create the server key and CSR", dir, |c| {
        c.args(["req", "-new", "-subj", "/CN=localhost"])
            .args(ec)
            .arg("-keyout")
            .arg(&files.server_key)
            .arg("-out")
            .arg(&csr)
            .arg("-config")
            .arg(&cnf);
    })?;
    openssl("sign the server certificate", dir, |c| {
        c.args(["x509", "-req", "-days", "3", "-set_serial", "2"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&files.ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&files.server_cert);
    })?;
    std::fs::set_permissions(&files.server_key, std::fs::Permissions::from_mode(0o600))
        .context("chmod 0600 the server key")?;
    Ok(files)
}

fn openssl(
    what: &str,
    dir: &Path,
    args: impl FnOnce(&mut std::process::Command),
) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new("openssl");
    cmd.current_dir(dir);
    args(&mut cmd);
    let out = cmd
        .output()
        .with_context(|| format!("run openssl to {what} (is the openssl CLI installed?)"))?;
    check_output(&format!("openssl ({what})"), &out)
}
