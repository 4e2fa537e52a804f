//! TLS to an upstream's backends (`tls = { ... }` in TOML, `proxy_pass https://` with
//! nginx's `proxy_ssl_*` directives): whether the backend's certificate is checked, against
//! which CA, under which name, and whether that name goes out as SNI. Everything is read and
//! built at load time (the CA file on every reload), so a bad file is a config error and a
//! connection only runs the handshake.
//!
//! Imports: nothing else in tideway.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the trusted CAs come from when verification is on and no `ca` file is named.
pub const DEFAULT_SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS settings of one upstream, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTlsSettings {
    /// Check the backend's certificate chain and name (nginx's `proxy_ssl_verify`).
    pub verify: bool,
    /// PEM file of the CAs trusted for backends (nginx's `proxy_ssl_trusted_certificate`);
    /// None: the system's ([`DEFAULT_SYSTEM_CA_FILE`]).
    pub ca: Option<PathBuf>,
    /// The name checked in the certificate and sent as SNI (nginx's `proxy_ssl_name`); None:
    /// the backend's IP address (checked against the certificate's IP addresses, no SNI).
    pub server_name: Option<String>,
    /// Send the server name by SNI (nginx's `proxy_ssl_server_name`). Never for an IP address.
    pub sni: bool,
}

/// An upstream's TLS, ready to connect with.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    pub settings: UpstreamTlsSettings,
    /// The rustls client configuration built from `settings` and the CA file.
    pub client: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
    /// Tells this TLS setup from another (and from plain TCP, 0): idle connections are kept
    /// and reused per backend address and this key.
    pub key: u64,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings && self.key == other.key
    }
}

impl UpstreamTls {
    /// Build the client side from `settings`, reading the CA file. The error says what is
    /// wrong, for the caller to place in the config.
    pub fn new(settings: UpstreamTlsSettings) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let name = match &settings.server_name {
            None => None,
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|_| {
                format!("tls.server_name {n:?} is not a DNS name or an IP address")
            })?),
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut hasher = std::hash::DefaultHasher::new();
        settings.hash(&mut hasher);
        let mut client = if settings.verify {
            let file = settings
                .ca
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSTEM_CA_FILE));
            let certs = read_cas(&file)?;
            certs.hash(&mut hasher);
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "{}: no usable CA certificate (expected PEM CERTIFICATE blocks)",
                    file.display()
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth()
        };
        client.enable_sni = settings.sni;
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamTls {
            settings,
            client: Arc::new(client),
            name,
            // 0 is plain TCP.
            key: hasher.finish() | 1,
        })
    }

    /// The name to connect to a backend at `ip` under.
    pub fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        self.name
            .clone()
            .unwrap_or(ServerName::IpAddress(ip.into()))
    }
}

/// The certificates of a PEM file.
fn read_cas(file: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("{}: cannot read CA certificates: {e}", file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: invalid PEM certificate: {e}", file.display()))
}

/// `verify = false` (nginx's default): any certificate is taken, but the handshake's
/// signatures are still checked, so the connection is at least encrypted to whoever holds the
/// key the certificate names.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
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
        let algs = &self.0.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_tell_tls_setups_apart_and_bad_files_are_errors() {
        let off = UpstreamTls::new(UpstreamTlsSettings::default()).unwrap();
        let sni = UpstreamTls::new(UpstreamTlsSettings {
            server_name: Some("app.test".into()),
            sni: true,
            ..Default::default()
        })
        .unwrap();
        assert_ne!(off.key, sni.key);
        assert_ne!(off.key, 0, "0 is plain TCP");
        assert!(sni.client.enable_sni && !off.client.enable_sni);
        assert_eq!(
            sni.server_name("10.0.0.1".parse().unwrap()),
            ServerName::try_from("app.test").unwrap()
        );
        assert_eq!(
            off.server_name("10.0.0.1".parse().unwrap()),
            ServerName::IpAddress("10.0.0.1".parse::<IpAddr>().unwrap().into())
        );
        let missing = UpstreamTls::new(UpstreamTlsSettings {
            verify: true,
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        assert!(missing.unwrap_err().contains("/nonexistent/ca.pem"));
        let bad_name = UpstreamTls::new(UpstreamTlsSettings {
            server_name: Some("not a name".into()),
            ..Default::default()
        });
        assert!(bad_name.unwrap_err().contains("not a name"));
    }
}
