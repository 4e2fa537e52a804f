//! TLS material named by the config: certificate chains and private keys, read and checked
//! at load time (and again on SIGHUP), so a bad or missing file is a config error naming the
//! file, never a panic at accept time.

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One certificate chain and its key, as named in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded certificate with the DNS names it covers (from its subject alternative names).
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, in seconds since the epoch.
    pub not_after: i64,
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct TlsError {
    pub path: PathBuf,
    pub msg: String,
}

fn err(path: &Path, msg: impl Into<String>) -> TlsError {
    TlsError {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Load and check one certificate chain and key.
pub fn load_cert(files: &TlsFiles) -> Result<LoadedCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err(&files.cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&files.cert, format!("invalid PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(err(
            &files.cert,
            "no certificate found; expected a PEM file with a CERTIFICATE block",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| err(&files.key, format!("cannot read a private key: {e}")))?;
    let signing = default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| err(&files.key, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        err(
            &files.key,
            format!("key does not match {}: {e}", files.cert.display()),
        )
    })?;
    let (_, x509) = x509_parser::parse_x509_certificate(certified.cert[0].as_ref())
        .map_err(|e| err(&files.cert, format!("unparsable certificate: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let not_after = x509.validity().not_after.timestamp();
    Ok(LoadedCert {
        names,
        key: Arc::new(certified),
        not_after,
    })
}

/// `[admin] tls = { cert, key, client_ca }`: the admin API over TLS, and with `client_ca`
/// only for clients that show a certificate that CA signed.
#[derive(Clone, Debug)]
pub struct AdminTls {
    pub files: TlsFiles,
    pub client_ca: Option<PathBuf>,
    /// The server side, built at load from the files.
    pub server: Arc<rustls::ServerConfig>,
}

impl PartialEq for AdminTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.files, &self.client_ca) == (&other.files, &other.client_ca)
    }
}

/// Load the admin API's certificate and key, and the CA its clients' certificates must come
/// from (if any), into a rustls server configuration (HTTP/1.1 by ALPN).
pub fn admin_tls(files: TlsFiles, client_ca: Option<PathBuf>) -> Result<AdminTls, TlsError> {
    let loaded = load_cert(&files)?;
    let provider = Arc::new(default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&files.cert, e.to_string()))?;
    let builder = match &client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| err(ca, format!("cannot read CA certificates: {e}")))?
            {
                let c = c.map_err(|e| err(ca, format!("invalid PEM certificate: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| err(ca, format!("unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(err(
                    ca,
                    "no CA certificate found; expected PEM CERTIFICATE blocks",
                ));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| err(ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(loaded.key)));
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(AdminTls {
        files,
        client_ca,
        server: Arc::new(server),
    })
}

/// Whether a certificate for `names` (its DNS subject alternative names, lowercased) is valid
/// for `host` (lowercased, without port or trailing dot) by the rule a client checks it by
/// (RFC 6125 6.4.3): the same name, or `*.rest` for one label more in front of `rest`.
pub fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| {
        n == host
            || n.strip_prefix("*.").is_some_and(|d| {
                host.split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == d)
            })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_certificate_covers_its_names_and_one_label_under_a_wildcard() {
        let names = ["a.test".to_string(), "*.w.test".to_string()];
        let covers = |h: &str| super::covers(&names, h);
        assert!(covers("a.test"));
        assert!(covers("x.w.test"));
        assert!(!covers("w.test"), "a wildcard is not its parent");
        assert!(!covers("y.x.w.test"), "a wildcard is one label");
        assert!(!covers(".w.test"), "an empty label");
        assert!(!covers("b.test"));
        assert!(!covers("xa.test"));
    }
}
