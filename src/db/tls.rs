//! TLS to PostgreSQL: libpq's `sslmode` levels as one rustls client
//! configuration, built once from the [`TlsSettings`] that `DATABASE_URL`
//! parsing produces and shared by every connection carga opens (the pools,
//! LISTEN, migrations, cancel requests); and the reading of a failed
//! handshake into its cause. Reads the CA and client-certificate files once,
//! when the settings become a [`Tls`]; never prints a key or a password.
//!
//! The same rustls (0.23, aws-lc-rs provider) serves HTTPS through reqwest,
//! so carga has one TLS stack. The provider is named explicitly rather than
//! taken from the process default, which two linked providers would leave
//! ambiguous.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Socket;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{DbError, Result};

/// libpq's `sslmode`, with libpq's meanings (see README, "TLS to the
/// database"). `Prefer` is the default, as in libpq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// libpq: plain first, TLS if the server refuses plain. tokio-postgres
    /// can only try TLS first, so carga treats it as `Prefer`.
    Allow,
    /// TLS if the server offers it, else plain; no certificate check
    /// unless a CA is given.
    #[default]
    Prefer,
    /// TLS or no connection; no certificate check unless a CA is given
    /// (then as `VerifyCa`).
    Require,
    /// TLS; the certificate must chain to the CA; any host name.
    VerifyCa,
    /// TLS; the certificate must chain to the CA and name the host.
    VerifyFull,
}

impl SslMode {
    /// The mode for libpq's spelling of it (`verify_ca` too, as asyncpg
    /// accepts); `None` for anything else.
    pub fn from_libpq(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" | "verify_ca" => SslMode::VerifyCa,
            "verify-full" | "verify_full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres negotiates for this mode; the verification
    /// level is the connector's (see [`Tls::new`]).
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Negotiation;
        match self {
            SslMode::Disable => Negotiation::Disable,
            SslMode::Allow | SslMode::Prefer => Negotiation::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Negotiation::Require,
        }
    }
}

/// The CA a server's certificate is checked against (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trust store.
    System,
}

/// A client certificate and its key (`sslcert`, `sslkey`), PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS part of `DATABASE_URL`, typed (see `db::parse_url`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub client_cert: Option<ClientCert>,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Encrypt only (libpq's `prefer` and `require` without a CA).
    Nothing,
    /// The chain to the CA, not the name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    ChainAndName,
}

impl TlsSettings {
    /// The CA to use: the one given, else libpq's default file
    /// `~/.postgresql/root.crt` when it exists.
    fn root_cert(&self) -> Option<RootCert> {
        if self.mode == SslMode::Disable {
            return None;
        }
        self.root_cert.clone().or_else(|| {
            let home = std::env::var_os("HOME")?;
            let default = Path::new(&home).join(".postgresql").join("root.crt");
            default.is_file().then_some(RootCert::File(default))
        })
    }

    /// libpq: `verify-full` checks everything; `verify-ca` the chain;
    /// below that, a CA file that exists makes the chain checked too.
    fn check(&self, root: Option<&RootCert>) -> Check {
        match self.mode {
            SslMode::VerifyFull => Check::ChainAndName,
            SslMode::VerifyCa => Check::Chain,
            SslMode::Disable => Check::Nothing,
            SslMode::Allow | SslMode::Prefer | SslMode::Require => match root {
                Some(_) => Check::Chain,
                None => Check::Nothing,
            },
        }
    }
}

/// The connector every connection uses: the settings made into one rustls
/// client configuration. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    settings: TlsSettings,
    /// What the certificate is checked against, for messages.
    trust: String,
    connect: MakeRustlsConnect,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the CA and client-certificate files and builds the rustls
    /// configuration. Fails (a configuration error) when a file cannot be
    /// read or holds no usable certificate or key, or when `verify-ca` /
    /// `verify-full` has no CA to check against.
    pub(crate) fn new(settings: &TlsSettings) -> Result<Tls> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let root = settings.root_cert();
        let check = settings.check(root.as_ref());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::TlsSetup(e.to_string()))?;
        let (builder, trust) = match (check, root) {
            (Check::Nothing, _) => (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PartialCheck {
                        roots: None,
                        provider,
                    })),
                "nothing (the certificate is not checked)".to_string(),
            ),
            (Check::Chain | Check::ChainAndName, None) => {
                return Err(DbError::NoRootCert {
                    mode: settings.mode.as_str(),
                });
            }
            (Check::Chain, Some(root)) => {
                let (roots, trust) = load_roots(&root)?;
                (
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(PartialCheck {
                            roots: Some(Arc::new(roots)),
                            provider,
                        })),
                    trust,
                )
            }
            (Check::ChainAndName, Some(root)) => {
                let (roots, trust) = load_roots(&root)?;
                (builder.with_root_certificates(roots), trust)
            }
        };
        let config = match &settings.client_cert {
            None => builder.with_no_client_auth(),
            Some(client) => {
                let (certs, key) = load_client_cert(client)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| DbError::ClientCert {
                        path: client.key.display().to_string(),
                        reason: e.to_string(),
                    })?
            }
        };
        Ok(Tls {
            settings: settings.clone(),
            trust,
            connect: MakeRustlsConnect::new(config),
        })
    }

    pub(crate) fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// What the server's certificate is checked against, for messages.
    pub(crate) fn trust(&self) -> &str {
        &self.trust
    }
}

impl MakeTlsConnect<Socket> for Tls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        MakeTlsConnect::<Socket>::make_tls_connect(&mut self.connect, hostname)
    }
}

fn load_roots(root: &RootCert) -> Result<(RootCertStore, String)> {
    let mut roots = RootCertStore::empty();
    match root {
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let reasons: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(DbError::SystemRoots(if reasons.is_empty() {
                    "no certificates found".into()
                } else {
                    reasons.join("; ")
                }));
            }
            Ok((roots, "the system trust store".into()))
        }
        RootCert::File(path) => {
            let unreadable = |reason: String| DbError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| unreadable(pem_reason(e)))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| unreadable(pem_reason(e)))?;
            if certs.is_empty() {
                return Err(unreadable("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| unreadable(format!("not a usable CA certificate: {e}")))?;
            }
            Ok((roots, format!("the CA file {}", path.display())))
        }
    }
}

fn load_client_cert(
    client: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let bad = |path: &Path, reason: String| DbError::ClientCert {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&client.cert)
        .map_err(|e| bad(&client.cert, pem_reason(e)))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(&client.cert, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(bad(&client.cert, "no PEM certificate in it".into()));
    }
    // The key's own text is never part of a message: only its path and
    // what went wrong.
    let key =
        PrivateKeyDer::from_pem_file(&client.key).map_err(|e| bad(&client.key, pem_reason(e)))?;
    Ok((certs, key))
}

/// A PEM reading error in words (the I/O cause, or what was malformed).
fn pem_reason(error: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as Pem;
    match error {
        Pem::Io(e) => e.to_string(),
        Pem::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("malformed PEM ({other:?})"),
    }
}

/// A certificate check rustls does not offer on its own: libpq's
/// `prefer`/`require` without a CA (`roots: None`: the session is
/// encrypted, the certificate is not checked — the handshake signature
/// still is, so the server holds the key of the certificate it sent) and
/// `verify-ca` (`roots: Some`: the certificate must chain to one of them and
/// be within its validity period; the name in it is not compared with the
/// host's).
#[derive(Debug)]
struct PartialCheck {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PartialCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls error behind a failed connection, if the failure was the TLS
/// handshake's (tokio-rustls wraps it in an `io::Error`, whose `source()`
/// skips the wrapped error, so each `io::Error` is opened by hand).
pub(super) fn handshake_error(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Asks the server whether it speaks TLS (PostgreSQL's SSLRequest: it
/// answers `S` or `N`), without logging in. `None` when it cannot be asked
/// (a socket, no answer within 3 s).
pub(super) async fn server_offers_tls(config: &tokio_postgres::Config) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = match (config.get_hostaddrs().first(), config.get_hosts().first()) {
        (Some(address), _) => address.to_string(),
        (None, Some(tokio_postgres::config::Host::Tcp(host))) => host.clone(),
        _ => return None,
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let mut request = bytes::BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut request);
        stream.write_all(&request).await.ok()?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.ok()?;
        Some(answer[0] == b'S')
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn tls_files_that_cannot_be_read_are_configuration_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.pem");
        let not_pem = dir.path().join("not-a-ca.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        for path in [&missing, &not_pem] {
            let e = Tls::new(&TlsSettings {
                mode: SslMode::VerifyFull,
                root_cert: Some(RootCert::File(path.clone())),
                client_cert: None,
            })
            .expect_err("unreadable CA");
            let text = e.to_string();
            assert!(matches!(e, DbError::CaFile { .. }), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(e.is_configuration());
        }
        // A key file's contents never reach the message.
        std::fs::write(&not_pem, "SECRET-KEY-MATERIAL").expect("write");
        let e = Tls::new(&TlsSettings {
            mode: SslMode::Require,
            root_cert: None,
            client_cert: Some(ClientCert {
                cert: not_pem.clone(),
                key: not_pem.clone(),
            }),
        })
        .expect_err("bad client cert");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(e.is_configuration());
    }

    #[test]
    fn verifying_modes_without_a_ca_say_how_to_give_one() {
        // libpq's default CA file (~/.postgresql/root.crt) would be used if
        // this machine had one.
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: None,
            client_cert: None,
        };
        let default_ca = std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".postgresql/root.crt"))
            .is_some_and(|p| p.exists());
        if !default_ca {
            let e = Tls::new(&settings).expect_err("no CA");
            assert!(matches!(e, DbError::NoRootCert { .. }), "{e}");
            assert!(e.to_string().contains("sslrootcert=system"), "{e}");
            assert!(e.is_configuration());
        }
        // Encrypt-only modes need no CA.
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
        ] {
            let settings = TlsSettings {
                mode,
                root_cert: None,
                client_cert: None,
            };
            Tls::new(&settings).expect("no CA needed");
        }
    }
}
