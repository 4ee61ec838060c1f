//! Reaching the central database: the connection string (a URL or libpq's
//! `key=value` form), the password from the environment, TLS as libpq's
//! `sslmode` means it, and the timeouts that keep a dead network from
//! hanging the shipper.
//!
//! tokio-postgres knows `sslmode` only up to `require`, and verifies
//! nothing itself; so `sslmode` and `sslrootcert` are taken out of the
//! string here and the rustls configuration is built to match libpq:
//! `require` encrypts (and, given a CA file, checks the chain, as libpq
//! does), `verify-ca` checks the chain, `verify-full` the chain and the
//! host name. Nothing here keeps session state on the server, so a
//! pgbouncer in transaction pooling mode between us and PostgreSQL is fine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::session::Session;
use super::PgError;

/// The environment variable a password may come from (it wins over one
/// in the connection string, so a secret need not sit in the file).
pub const PASSWORD_ENV: &str = "LEDGERTAIL_POSTGRES_PASSWORD";

/// libpq's `sslmode`, all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    /// Try TLS, fall back to plain (libpq's default; verifies nothing).
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    pub fn parse(s: &str) -> Option<TlsMode> {
        Some(match s {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Where and how to connect, parsed once from the configuration.
/// Two targets are equal when they show the same and wait the same (the
/// password is not compared: it is never shown).
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    /// What to show of the target in logs and errors: the string with any
    /// password taken out.
    shown: String,
    /// Server-side limit on each statement (`SET LOCAL` in each
    /// transaction: a startup option would not pass a pgbouncer).
    pub statement_timeout: Duration,
    connect_timeout: Duration,
}

impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        (
            &self.shown,
            self.tls,
            &self.ca_file,
            self.statement_timeout,
            self.connect_timeout,
        ) == (
            &other.shown,
            other.tls,
            &other.ca_file,
            other.statement_timeout,
            other.connect_timeout,
        )
    }
}

impl Eq for Target {}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("target", &self.shown)
            .field("tls", &self.tls)
            .finish()
    }
}

/// How long to wait, for connecting and for each statement.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub statement: Duration,
}

/// Why a connection string cannot be used (said before any connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "sslmode = {0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
    )]
    SslMode(String),
    #[error("the connection string is not valid: {0}")]
    Invalid(String),
    #[error("the connection string names no host")]
    NoHost,
    #[error("the connection string names no user (postgresql://USER@HOST/DB)")]
    NoUser,
    #[error("sslmode = {0} needs the CA that signed the server's certificate: set ca_file under [postgres] (--ca-file on the command line, or sslrootcert in the string)")]
    NoCaFile(&'static str),
}

impl TargetError {
    /// How a connection string is written.
    pub fn hint(&self) -> Option<String> {
        match self {
            TargetError::NoCaFile(_) => None,
            _ => Some("a URL (postgresql://USER@HOST:PORT/DB?sslmode=verify-full) or key=value pairs (host=HOST user=USER dbname=DB sslmode=verify-full); the password goes in LEDGERTAIL_POSTGRES_PASSWORD".into()),
        }
    }
}

impl Target {
    /// Parses `text` (`postgresql://…` or `host=… user=…`). `ca_file`
    /// (from the configuration) wins over `sslrootcert` in the string; the
    /// password comes from [`PASSWORD_ENV`] when it is set.
    pub fn parse(
        text: &str,
        ca_file: Option<&Path>,
        timeouts: Timeouts,
        password_env: Option<String>,
    ) -> Result<Target, TargetError> {
        let text = text.trim();
        let (rest, params) = if text.starts_with("postgres://") || text.starts_with("postgresql://")
        {
            take_url_params(text)
        } else {
            take_keyword_params(text)?
        };
        let mut tls = None;
        let mut root = None;
        for (key, value) in params {
            match key.as_str() {
                "sslmode" => {
                    tls = Some(
                        TlsMode::parse(&value)
                            .ok_or_else(|| TargetError::SslMode(value.clone()))?,
                    )
                }
                _ => root = Some(PathBuf::from(value)),
            }
        }
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| TargetError::Invalid(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(TargetError::NoHost);
        }
        if config.get_user().is_none() {
            return Err(TargetError::NoUser);
        }
        if let Some(password) = password_env.filter(|p| !p.is_empty()) {
            config.password(password);
        }
        let tls = tls.unwrap_or(TlsMode::Prefer);
        config.ssl_mode(match tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("ledgertail");
        }
        config.connect_timeout(timeouts.connect);
        // A peer that stops answering is noticed within about the connect
        // timeout, not after the kernel's two hours.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.tcp_user_timeout(timeouts.statement + timeouts.connect);
        let ca_file = ca_file.map(Path::to_path_buf).or(root);
        if matches!(tls, TlsMode::VerifyCa | TlsMode::VerifyFull) && ca_file.is_none() {
            return Err(TargetError::NoCaFile(if tls == TlsMode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            }));
        }
        Ok(Target {
            shown: shown(&config, tls),
            config,
            tls,
            ca_file,
            statement_timeout: timeouts.statement,
            connect_timeout: timeouts.connect,
        })
    }

    /// The same target with `password` (none or empty: as it was).
    pub fn with_password(mut self, password: Option<String>) -> Target {
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            self.config.password(password);
        }
        self
    }

    /// The same target with other waits (`status` answers while a server
    /// is down: it waits less).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Target {
        self.config.connect_timeout(timeouts.connect);
        self.config
            .tcp_user_timeout(timeouts.statement + timeouts.connect);
        self.connect_timeout = timeouts.connect;
        self.statement_timeout = timeouts.statement;
        self
    }

    /// The target as logs show it: user, hosts, ports, database, TLS mode;
    /// never a password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// How long any one wait for the server may last: longer than the
    /// server's own statement timeout (which answers a slow statement with
    /// an error), so that only a server that stopped answering meets it.
    pub fn deadline(&self) -> Duration {
        self.statement_timeout + self.connect_timeout
    }

    /// Checks what can be checked without the server: the CA file loads.
    /// `run` calls it at start, so a missing or unreadable CA stops the
    /// start instead of failing every connection for ever.
    pub fn preflight(&self) -> Result<(), PgError> {
        match self.tls {
            TlsMode::Disable => Ok(()),
            _ => self.tls_connector().map(|_| ()),
        }
    }

    /// Opens a connection (within the deadline, handshake and TLS
    /// included).
    pub fn connect(&self) -> Result<Session, PgError> {
        let tls = match self.tls {
            TlsMode::Disable => None,
            _ => Some(self.tls_connector()?),
        };
        let config = self.config.clone();
        Session::open(self.deadline(), || async move {
            let spawned = match tls {
                None => config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map(|(client, conn)| {
                        (
                            client,
                            tokio::spawn(async move {
                                let _ = conn.await;
                            }),
                        )
                    }),
                Some(tls) => config.connect(tls).await.map(|(client, conn)| {
                    (
                        client,
                        tokio::spawn(async move {
                            let _ = conn.await;
                        }),
                    )
                }),
            };
            spawned.map_err(|e| PgError::from_connect(e, self))
        })
    }

    fn tls_connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
        let provider = crate::tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::tls_setup(format!("TLS set-up: {e}")))?;
        let roots = match &self.ca_file {
            Some(path) => Some(load_roots(path)?),
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (self.tls, roots) {
            (TlsMode::VerifyFull, Some(roots)) => webpki(roots, provider)?,
            (TlsMode::VerifyCa | TlsMode::Require | TlsMode::Prefer, Some(roots)) => {
                Arc::new(ChainOnly(webpki(roots, provider)?))
            }
            (_, _) => Arc::new(EncryptOnly(provider)),
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    pub(super) fn tls_mode(&self) -> TlsMode {
        self.tls
    }

    /// Whether a password was given (in the string or the environment).
    pub(super) fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    pub(super) fn user(&self) -> &str {
        self.config.get_user().unwrap_or("?")
    }
}

fn webpki(
    roots: rustls::RootCertStore,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, PgError> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| PgError::tls_setup(format!("TLS set-up: {e}")))
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, PgError> {
    crate::tls::load_roots(path).map_err(|e| PgError::tls_setup(e.to_string()))
}

/// `verify-ca`: the chain must lead to the CA; any host name is accepted.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without a CA file: encrypted, the certificate not checked
/// (libpq's meaning; the README says to prefer `verify-full`). The
/// handshake's signatures are still verified, so the session key belongs
/// to whoever holds the certificate's key.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What logs may show of a target.
fn shown(config: &tokio_postgres::Config, tls: TlsMode) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "{}@{}/{} ({})",
        config.get_user().unwrap_or("?"),
        hosts.join(","),
        config
            .get_dbname()
            .unwrap_or(config.get_user().unwrap_or("")),
        match tls {
            TlsMode::Disable => "sslmode=disable",
            TlsMode::Prefer => "sslmode=prefer",
            TlsMode::Require => "sslmode=require",
            TlsMode::VerifyCa => "sslmode=verify-ca",
            TlsMode::VerifyFull => "sslmode=verify-full",
        }
    )
}

type Params = Vec<(String, String)>;

const OURS: [&str; 2] = ["sslmode", "sslrootcert"];

/// Takes `sslmode` and `sslrootcert` out of a URL's query.
fn take_url_params(url: &str) -> (String, Params) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if OURS.contains(&key) {
            taken.push((key.to_owned(), percent_decode(value)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, taken)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes `sslmode` and `sslrootcert` out of a `key=value` string (values
/// may be single-quoted, with `\'` and `\\` inside, as libpq reads them).
fn take_keyword_params(text: &str) -> Result<(String, Params), TargetError> {
    let mut kept = String::new();
    let mut taken = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(TargetError::Invalid(format!("`{key}` has no `=value`")));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut raw = String::new();
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            raw.push('\'');
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => {
                        let c = chars.next().ok_or_else(|| {
                            TargetError::Invalid("it ends inside a quoted value".into())
                        })?;
                        raw.push('\\');
                        raw.push(c);
                        value.push(c);
                    }
                    Some('\'') => {
                        raw.push('\'');
                        break;
                    }
                    Some(c) => {
                        raw.push(c);
                        value.push(c);
                    }
                    None => {
                        return Err(TargetError::Invalid("it ends inside a quoted value".into()))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                raw.push(c);
                value.push(c);
                chars.next();
            }
        }
        if OURS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(&key);
            kept.push('=');
            kept.push_str(&raw);
        }
    }
    Ok((kept, taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        statement: Duration::from_secs(30),
    };

    #[test]
    fn url_and_keywords_lose_only_our_parameters() {
        let (rest, p) = take_url_params(
            "postgresql://u@h:5/db?sslmode=verify-full&connect_timeout=3&sslrootcert=%2Fca.pem",
        );
        assert_eq!(rest, "postgresql://u@h:5/db?connect_timeout=3");
        assert_eq!(
            p,
            vec![
                ("sslmode".into(), "verify-full".into()),
                ("sslrootcert".into(), "/ca.pem".into())
            ]
        );
        let (rest, p) =
            take_keyword_params("host=h  user = u sslmode=require password='a b\\'c' dbname=x")
                .unwrap();
        assert_eq!(rest, "host=h user=u password='a b\\'c' dbname=x");
        assert_eq!(p, vec![("sslmode".into(), "require".into())]);
        assert!(take_keyword_params("host").is_err());
        assert!(take_keyword_params("password='open").is_err());
    }

    #[test]
    fn a_password_is_never_shown() {
        let t = Target::parse(
            "postgresql://ingest:s3cret@db.example:5433/ledgers",
            None,
            T,
            None,
        )
        .unwrap();
        assert_eq!(t.shown(), "ingest@db.example:5433/ledgers (sslmode=prefer)");
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = Target::parse(
            "host=h user=u password=s3cret sslmode=disable",
            None,
            T,
            Some("env".into()),
        )
        .unwrap();
        assert!(!t.shown().contains("s3cret"), "{}", t.shown());
        assert_eq!(t.config.get_password(), Some(&b"env"[..]));
    }

    #[test]
    fn verification_needs_a_ca_and_modes_are_checked() {
        let e =
            Target::parse("postgresql://u@h/db?sslmode=verify-full", None, T, None).unwrap_err();
        assert!(e.to_string().contains("ca_file"), "{e}");
        let e = Target::parse("postgresql://u@h/db?sslmode=verify", None, T, None).unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");
        let e = Target::parse("postgresql://h/db", None, T, None).unwrap_err();
        assert_eq!(e, TargetError::NoUser);
        let t = Target::parse(
            "postgresql://u@h/db?sslmode=verify-ca",
            Some(Path::new("/ca.pem")),
            T,
            None,
        )
        .unwrap();
        assert_eq!(t.tls_mode(), TlsMode::VerifyCa);
    }
}
