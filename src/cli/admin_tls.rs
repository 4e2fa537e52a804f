//! How `tideway ctl` reaches an admin API served over TLS (`[admin] tls`): the CA that signed
//! its certificate, and a client certificate when the API asks for one (`client_ca`).

use reqwest::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `--ca`, `--cert` and `--key`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AdminTlsArgs {
    /// With an https:// admin URL: the CA (PEM) that signed the admin API's certificate
    /// (default: the system's, /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, env = "TIDEWAY_ADMIN_CA")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for an admin API with `client_ca`; needs --key.
    #[arg(long, env = "TIDEWAY_ADMIN_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "TIDEWAY_ADMIN_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// Why the TLS client could not be set up: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct AdminTlsError {
    pub path: PathBuf,
    pub msg: String,
}

fn err(path: &Path, msg: impl std::fmt::Display) -> AdminTlsError {
    AdminTlsError {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// The HTTP client for the admin API at `admin`: plain for http://; for https://, trusting
/// `--ca` (or the system's CAs) and showing `--cert` if given. `--ca`, `--cert` or `--key`
/// with an http:// URL is an error: they would be ignored and the token sent in clear.
pub fn client(args: &AdminTlsArgs, admin: &str) -> Result<Client, AdminTlsError> {
    if !admin.starts_with("https://") {
        if let Some(given) = [&args.ca, &args.cert, &args.key]
            .into_iter()
            .flatten()
            .next()
        {
            return Err(err(
                given,
                format!("a TLS option (--ca, --cert, --key) with the admin URL {admin}, which is not https://: nothing would be checked and the token would go in clear; use https://"),
            ));
        }
        return Ok(Client::new());
    }
    let ca = args
        .ca
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::upstream_tls::DEFAULT_SYSTEM_CA_FILE));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).map_err(|e| err(&ca, e))? {
        let c = c.map_err(|e| err(&ca, e))?;
        roots.add(c).map_err(|e| err(&ca, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&ca, e))?
        .with_root_certificates(roots);
    let mut config = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| err(cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(cert, e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| err(key, e))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .map_err(|e| err(&ca, e))
}
