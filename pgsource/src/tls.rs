//! TLS towards PostgreSQL with libpq's `sslmode` semantics, on rustls with the ring provider
//! (passed explicitly, so no process-wide provider has to be installed).
//!
//! - `disable`: no TLS.
//! - `prefer` / `require`: encrypted, but the server certificate is not checked (as libpq
//!   without a root certificate); handshake signatures are still verified.
//! - `verify-ca`: the certificate chain must lead to one of the given CA certificates; any
//!   host name.
//! - `verify-full`: as `verify-ca`, and the certificate must be valid for the host name.
//!
//! The CA certificates come as PEM bytes: the runtime reads them from `--sslrootcert`, the
//! operator from the `caSecret` of a ReplicationGroup. Each caller wraps [`TlsError`] into an
//! error that names its own setting.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// TLS mode of a PostgreSQL connection, as libpq's `sslmode`: the one definition, used by the
/// runtime's flags and config file (`pg_flo_config`, with the `clap` feature) and by the
/// operator's CRD fields (with the `schemars` feature). Spelled as libpq (`verify-ca`) in
/// YAML, on the command line and in [`fmt::Display`]; [`std::str::FromStr`] ignores case and
/// surrounding spaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, without certificate checks (libpq's default).
    #[default]
    Prefer,
    /// TLS, without certificate checks.
    Require,
    /// TLS, server certificate signed by one of the CAs, any host name.
    VerifyCa,
    /// TLS, server certificate signed by one of the CAs and valid for the host name.
    VerifyFull,
}

impl SslMode {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server certificate is checked against CA certificates (which are then
    /// required).
    pub fn verifies_certificate(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let all = [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ];
        all.into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown sslmode {s:?}: use disable, prefer, require, verify-ca or verify-full"
                )
            })
    }
}

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode {mode} needs the CA certificate that signed the server's certificate")]
    MissingCa { mode: SslMode },
    #[error("the CA certificate PEM cannot be parsed")]
    ParseCa {
        #[source]
        source: std::io::Error,
    },
    #[error("the CA certificate PEM contains no certificate")]
    NoCa,
    #[error("the CA certificate is unusable")]
    InvalidCa {
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
    #[error("the client certificate or key PEM cannot be parsed")]
    ParseClientCert {
        #[source]
        source: std::io::Error,
    },
    #[error("the client certificate PEM contains no certificate, or the key PEM no private key")]
    NoClientCert,
    #[error("the client certificate and key are unusable")]
    InvalidClientCert {
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
            TlsError::MissingCa { .. } => "tls_missing_root_cert",
            TlsError::ParseCa { .. } | TlsError::NoCa | TlsError::InvalidCa { .. } => {
                "tls_root_cert"
            }
            TlsError::ParseClientCert { .. }
            | TlsError::NoClientCert
            | TlsError::InvalidClientCert { .. } => "tls_client_cert",
            TlsError::Verifier { .. } | TlsError::Protocol { .. } => "tls_config",
            TlsError::ServerName { .. } => "tls_server_name",
        }
    }
}

/// The rustls client configuration for `mode`, or `None` for [`SslMode::Disable`].
///
/// `ca_pem` holds the trusted CA certificate(s) as PEM; required for `verify-ca` and
/// `verify-full` ([`TlsError::MissingCa`] without it), ignored otherwise (libpq would verify
/// with a root certificate under `prefer`/`require` too when its file exists; these modes stay
/// unverified so their meaning does not depend on a file's presence).
pub fn client_config(
    mode: SslMode,
    ca_pem: Option<&[u8]>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(verifier) = verifier(mode, ca_pem, &provider)? else {
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

/// [`client_config`] that also presents a client certificate (mutual TLS): `cert_pem` is the
/// certificate chain, `key_pem` its private key (PKCS#8, PKCS#1 or SEC1).
pub fn client_config_with_cert(
    mode: SslMode,
    ca_pem: Option<&[u8]>,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(verifier) = verifier(mode, ca_pem, &provider)? else {
        return Ok(None);
    };
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParseClientCert { source })?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|source| TlsError::ParseClientCert { source })?
        .ok_or(TlsError::NoClientCert)?;
    if certs.is_empty() {
        return Err(TlsError::NoClientCert);
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Protocol { source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|source| TlsError::InvalidClientCert { source })?;
    Ok(Some(Arc::new(config)))
}

/// The server certificate verifier for `mode` (`None` for `disable`).
fn verifier(
    mode: SslMode,
    ca_pem: Option<&[u8]>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ServerCertVerifier>>, TlsError> {
    Ok(Some(match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => Arc::new(NoCertificateCheck {
            algorithms: provider.signature_verification_algorithms,
        }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let pem = ca_pem.ok_or(TlsError::MissingCa { mode })?;
            let roots = Arc::new(load_roots(pem)?);
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

/// Reads every PEM certificate in `pem` into a root store.
fn load_roots(mut pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem) {
        let cert = cert.map_err(|source| TlsError::ParseCa { source })?;
        roots
            .add(cert)
            .map_err(|source| TlsError::InvalidCa { source })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa);
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
    use std::path::{Path, PathBuf};
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
        let dir =
            std::env::temp_dir().join(format!("pg_flo_source_tls_{name}_{}", std::process::id()));
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

    fn verifier_for(mode: SslMode, ca_pem: Option<&[u8]>) -> Arc<dyn ServerCertVerifier> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert!(client_config(mode, ca_pem).unwrap().is_some());
        verifier(mode, ca_pem, &provider).unwrap().unwrap()
    }

    fn verify(
        verifier: &Arc<dyn ServerCertVerifier>,
        cert: &CertificateDer<'_>,
        host: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(cert, &[], &server_name(host).unwrap(), &[], UnixTime::now())
    }

    #[test]
    fn sslmode_spellings() {
        assert_eq!(" VERIFY-FULL".parse::<SslMode>(), Ok(SslMode::VerifyFull));
        assert!("allow".parse::<SslMode>().is_err());
        assert_eq!(SslMode::VerifyCa.to_string(), "verify-ca");
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode));
        }
    }

    #[test]
    fn a_client_certificate_is_presented_when_usable() {
        let pki = make_pki("client_cert");
        let ca = std::fs::read(pki.dir.join("ca.pem")).unwrap();
        let cert = std::fs::read(pki.dir.join("server.pem")).unwrap();
        let key = std::fs::read(pki.dir.join("server.key")).unwrap();
        let config = client_config_with_cert(SslMode::VerifyFull, Some(&ca), &cert, &key)
            .unwrap()
            .unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(!client_config(SslMode::VerifyFull, Some(&ca))
            .unwrap()
            .unwrap()
            .client_auth_cert_resolver
            .has_certs());
        let cases: [(&[u8], &[u8], &str); 3] = [
            (b"", &key, "tls_client_cert"),
            (&cert, b"", "tls_client_cert"),
            (&cert, &cert, "tls_client_cert"),
        ];
        for (c, k, category) in cases {
            let err = client_config_with_cert(SslMode::VerifyFull, Some(&ca), c, k).unwrap_err();
            assert_eq!(err.category(), category, "{err:?}");
        }
        assert!(client_config_with_cert(SslMode::Disable, None, &cert, &key)
            .unwrap()
            .is_none());
    }

    #[test]
    fn disable_is_no_tls() {
        assert!(client_config(SslMode::Disable, None).unwrap().is_none());
        assert!(client_config(SslMode::Disable, Some(b"ignored"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn verify_modes_need_a_ca() {
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let err = client_config(mode, None).unwrap_err();
            assert!(matches!(err, TlsError::MissingCa { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "sslmode {mode} needs the CA certificate that signed the server's certificate"
                )
            );
            assert_eq!(err.category(), "tls_missing_root_cert");
        }
    }

    #[test]
    fn unverified_modes_ignore_the_ca() {
        for mode in [SslMode::Prefer, SslMode::Require] {
            assert!(client_config(mode, None).unwrap().is_some());
            assert!(client_config(mode, Some(b"not a certificate"))
                .unwrap()
                .is_some());
        }
    }

    #[test]
    fn certificate_checks_per_mode() {
        let pki = make_pki("modes");
        let ca = std::fs::read(pki.dir.join("ca.pem")).unwrap();
        let ca = Some(ca.as_slice());
        let server = der(&pki.dir.join("server.pem"));
        let self_signed = der(&pki.dir.join("ca.pem"));

        // prefer / require: anything goes.
        for mode in [SslMode::Prefer, SslMode::Require] {
            let config = verifier_for(mode, None);
            assert!(verify(&config, &self_signed, "other.example").is_ok());
        }

        // verify-ca: the chain counts, the name does not.
        let config = verifier_for(SslMode::VerifyCa, ca);
        assert!(verify(&config, &server, "db.example").is_ok());
        assert!(verify(&config, &server, "other.example").is_ok());
        assert!(verify(&config, &server, "10.0.0.1").is_ok());

        // verify-full: chain and name.
        let config = verifier_for(SslMode::VerifyFull, ca);
        assert!(verify(&config, &server, "db.example").is_ok());
        assert!(verify(&config, &server, "other.example").is_err());

        // A certificate from another CA fails both verify modes.
        let other = make_pki("other");
        let foreign = der(&other.dir.join("server.pem"));
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let config = verifier_for(mode, ca);
            assert!(verify(&config, &foreign, "db.example").is_err(), "{mode}");
        }
    }

    #[test]
    fn pem_without_certificates_is_an_error() {
        let err = client_config(SslMode::VerifyCa, Some(b"not a certificate\n")).unwrap_err();
        assert!(matches!(err, TlsError::NoCa), "{err:?}");
        assert_eq!(err.category(), "tls_root_cert");
        let truncated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let err = client_config(SslMode::VerifyFull, Some(truncated)).unwrap_err();
        assert!(matches!(err, TlsError::ParseCa { .. }), "{err:?}");
    }

    #[test]
    fn server_names() {
        assert_eq!(server_name("db.example").unwrap().to_str(), "db.example");
        assert_eq!(server_name("127.0.0.1").unwrap().to_str(), "127.0.0.1");
        let err = server_name("not a host").unwrap_err();
        assert_eq!(err.category(), "tls_server_name");
    }
}
