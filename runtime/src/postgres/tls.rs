//! TLS towards PostgreSQL with libpq's `sslmode` semantics: the CA certificate comes from the
//! file named by `--sslrootcert`; the rustls configuration itself is built by
//! `pg_flo_source::tls` (shared with the operator, whose CA comes from a Secret).
//!
//! - `disable`: no TLS.
//! - `prefer` / `require`: encrypted, but the server certificate is not checked (as libpq
//!   without a root certificate); handshake signatures are still verified.
//! - `verify-ca`: the certificate chain must lead to a CA in `sslrootcert`; any host name.
//! - `verify-full`: as `verify-ca`, and the certificate must be valid for the host name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pg_flo_source::tls as shared;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::config::SslMode;

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "sslmode {mode} needs the CA certificate that signed the server's certificate: set \
         --sslrootcert (or --target-sslrootcert / --source-sslrootcert for the postgres sink)"
    )]
    MissingRootCert { mode: SslMode },
    #[error("cannot read sslrootcert {}", path.display())]
    ReadRootCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sslrootcert {} contains no PEM certificate", path.display())]
    NoRootCert { path: PathBuf },
    #[error("sslrootcert {} contains an unusable CA certificate", path.display())]
    InvalidRootCert {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// Building the verifier or protocol versions failed, or the host is no TLS server name.
    #[error(transparent)]
    Config(shared::TlsError),
}

impl TlsError {
    /// Metric label / log category.
    pub fn category(&self) -> &'static str {
        match self {
            TlsError::MissingRootCert { .. } => "tls_missing_root_cert",
            TlsError::ReadRootCert { .. }
            | TlsError::NoRootCert { .. }
            | TlsError::InvalidRootCert { .. } => "tls_root_cert",
            TlsError::Config(e) => e.category(),
        }
    }

    /// Names the file for the errors about the CA certificate.
    fn with_root_cert(e: shared::TlsError, mode: SslMode, path: &Path) -> Self {
        let path = path.to_owned();
        match e {
            shared::TlsError::MissingCa { .. } => TlsError::MissingRootCert { mode },
            shared::TlsError::ParseCa { source } => TlsError::ReadRootCert { path, source },
            shared::TlsError::NoCa => TlsError::NoRootCert { path },
            shared::TlsError::InvalidCa { source } => TlsError::InvalidRootCert { path, source },
            other => TlsError::Config(other),
        }
    }
}

/// The rustls client configuration for `mode`, or `None` for [`SslMode::Disable`].
///
/// `rootcert` is a PEM file with the trusted CA certificate(s); required for `verify-ca` and
/// `verify-full`, ignored otherwise (libpq would verify with it under `prefer`/`require` too
/// when the file exists; we keep those modes unverified so their meaning does not depend on a
/// file's presence).
pub fn client_config(
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if !mode.verifies_certificate() {
        return shared::client_config(mode, None).map_err(TlsError::Config);
    }
    let path = rootcert.ok_or(TlsError::MissingRootCert { mode })?;
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadRootCert {
        path: path.to_owned(),
        source,
    })?;
    shared::client_config(mode, Some(&pem)).map_err(|e| TlsError::with_root_cert(e, mode, path))
}

/// The TLS server name for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    shared::server_name(host).map_err(TlsError::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("pg_flo_tls_{name}_{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn disable_is_no_tls() {
        assert!(client_config(SslMode::Disable, None).unwrap().is_none());
    }

    #[test]
    fn verify_modes_need_a_root_cert() {
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let err = client_config(mode, None).unwrap_err();
            assert!(err.to_string().contains("--sslrootcert"), "{err}");
            assert_eq!(err.category(), "tls_missing_root_cert");
        }
        let err =
            client_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(err, TlsError::ReadRootCert { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "cannot read sslrootcert /nonexistent/ca.pem"
        );
    }

    #[test]
    fn file_without_certificates_is_an_error() {
        let dir = Dir::new("empty");
        let path = dir.0.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(SslMode::VerifyCa, Some(&path)).unwrap_err();
        assert!(matches!(err, TlsError::NoRootCert { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("sslrootcert {} contains no PEM certificate", path.display())
        );
    }

    #[test]
    fn a_ca_file_gives_a_verifying_config() {
        let dir = Dir::new("ca");
        let files = e2e::generate_tls(&dir.0).unwrap();
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            assert!(client_config(mode, Some(&files.ca_cert)).unwrap().is_some());
        }
        // The CA file is not read for the unverified modes.
        let missing = dir.0.join("missing.pem");
        assert!(client_config(SslMode::Require, Some(&missing))
            .unwrap()
            .is_some());
    }

    #[test]
    fn host_names_and_addresses_are_server_names() {
        assert_eq!(server_name("db.example").unwrap().to_str(), "db.example");
        assert_eq!(server_name("127.0.0.1").unwrap().to_str(), "127.0.0.1");
        let err = server_name("not a host").unwrap_err();
        assert_eq!(err.category(), "tls_server_name");
    }
}
