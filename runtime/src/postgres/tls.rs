//! TLS towards PostgreSQL with libpq's `sslmode` semantics, on rustls with the ring provider
//! (passed explicitly, so no process-wide provider has to be installed).
//!
//! - `disable`: no TLS.
//! - `prefer` / `require`: encrypted, but the server certificate is not checked (as libpq
//!   without a root certificate); handshake signatures are still verified.
//! - `verify-ca`: the certificate chain must lead to a CA in `sslrootcert`; any host name.
//! - `verify-full`: as `verify-ca`, and the certificate must be valid for the host name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

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
    #[error("cannot build the certificate verifier")]
    Verifier {
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    #[error("cannot set up the TLS protocol versions")]
    Protocol {
        #[source]
        source: rustls::Error,
    },
    #[error("host {host:?} cannot be used as a TLS server name")]
    ServerName {
        host: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

impl TlsError {
    /// Metric label / log category.
    pub fn category(&self) -> &'static str {
        match self {
            TlsError::MissingRootCert { .. } => "tls_missing_root_cert",
            TlsError::ReadRootCert { .. }
            | TlsError::NoRootCert { .. }
            | TlsError::InvalidRootCert { .. } => "tls_root_cert",
            TlsError::Verifier { .. } | TlsError::Protocol { .. } => "tls_config",
            TlsError::ServerName { .. } => "tls_server_name",
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(verifier) = verifier(mode, rootcert, &provider)? else {
        return Ok(None);
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Protocol { source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// The server certificate verifier for `mode` (`None` for `disable`).
fn verifier(
    mode: SslMode,
    rootcert: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ServerCertVerifier>>, TlsError> {
    Ok(Some(match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => Arc::new(NoCertificateCheck {
            algorithms: provider.signature_verification_algorithms,
        }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let path = rootcert.ok_or(TlsError::MissingRootCert { mode })?;
            let roots = Arc::new(load_roots(path)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|source| TlsError::Verifier { source })?;
            if mode == SslMode::VerifyCa {
                Arc::new(AnyHostName { inner: webpki })
            } else {
                webpki
            }
        }
    }))
}

/// The TLS server name for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|source| TlsError::ServerName {
        host: host.to_owned(),
        source,
    })
}

/// Reads every PEM certificate in `path` into a root store.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadRootCert {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|source| TlsError::ReadRootCert {
            path: path.to_owned(),
            source,
        })?;
        roots
            .add(cert)
            .map_err(|source| TlsError::InvalidRootCert {
                path: path.to_owned(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoRootCert {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// `prefer` / `require`: accepts any certificate, checks the handshake signatures.
struct NoCertificateCheck {
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for NoCertificateCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoCertificateCheck")
    }
}

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the WebPKI chain check, with a name mismatch forgiven.
///
/// rustls checks the chain before the name, so a `NotValidForName` error means the chain
/// itself was accepted.
#[derive(Debug)]
struct AnyHostName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A temp dir with `ca.pem`, and `server.pem` (signed by the CA, for `db.example`).
    struct Pki {
        dir: PathBuf,
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl binary is needed for the TLS tests (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn make_pki(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("pg_flo_tls_{name}_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=pg_flo test CA",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=db.example",
            ],
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:db.example\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        Pki { dir }
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        let pem = std::fs::read(path).unwrap();
        let cert = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        cert
    }

    fn verifier_for(mode: SslMode, rootcert: Option<&Path>) -> Arc<dyn ServerCertVerifier> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert!(client_config(mode, rootcert).unwrap().is_some());
        verifier(mode, rootcert, &provider).unwrap().unwrap()
    }

    fn verify(
        verifier: &Arc<dyn ServerCertVerifier>,
        cert: &CertificateDer<'_>,
        host: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(cert, &[], &server_name(host).unwrap(), &[], UnixTime::now())
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
        }
        let err =
            client_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(err, TlsError::ReadRootCert { .. }), "{err:?}");
    }

    #[test]
    fn certificate_checks_per_mode() {
        let pki = make_pki("modes");
        let ca = pki.dir.join("ca.pem");
        let server = der(&pki.dir.join("server.pem"));
        let self_signed = der(&ca);

        // prefer / require: anything goes.
        for mode in [SslMode::Prefer, SslMode::Require] {
            let config = verifier_for(mode, None);
            assert!(verify(&config, &self_signed, "other.example").is_ok());
        }

        // verify-ca: the chain counts, the name does not.
        let config = verifier_for(SslMode::VerifyCa, Some(&ca));
        assert!(verify(&config, &server, "db.example").is_ok());
        assert!(verify(&config, &server, "other.example").is_ok());
        assert!(verify(&config, &server, "10.0.0.1").is_ok());

        // verify-full: chain and name.
        let config = verifier_for(SslMode::VerifyFull, Some(&ca));
        assert!(verify(&config, &server, "db.example").is_ok());
        assert!(verify(&config, &server, "other.example").is_err());

        // A certificate from another CA fails both verify modes.
        let other = make_pki("other");
        let foreign = der(&other.dir.join("server.pem"));
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let config = verifier_for(mode, Some(&ca));
            assert!(verify(&config, &foreign, "db.example").is_err(), "{mode}");
        }
    }

    #[test]
    fn file_without_certificates_is_an_error() {
        let dir = std::env::temp_dir().join(format!("pg_flo_tls_empty_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(SslMode::VerifyCa, Some(&path)).unwrap_err();
        assert!(matches!(err, TlsError::NoRootCert { .. }), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
