//! How tideway reaches etcd securely: TLS (a CA to trust, a client certificate to show) and
//! a user with a password. Files are read at load, so a bad one is a config error; the
//! password and the client key are held as [`Secret`], which never prints.
//!
//! Imports: nothing else in tideway.

use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};

/// The environment variable a password may come from instead of `password_file`.
pub const ETCD_PASSWORD_ENV: &str = "TIDEWAY_ETCD_PASSWORD";

/// Bytes or text that must not be logged: `Debug` prints only that something is there.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(v: T) -> Self {
        Secret(v)
    }

    /// The secret itself, for the one place that hands it to etcd.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// TLS to etcd.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EtcdTls {
    /// PEM of the CAs that sign etcd's server certificates (`ca`).
    pub ca_pem: Vec<u8>,
    /// The client certificate chain and its key (`cert`, `key`), for etcd's
    /// `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Secret<Vec<u8>>)>,
    /// The name checked in etcd's certificate (`server_name`); None: the endpoint's host.
    pub server_name: Option<String>,
}

/// A user of etcd's authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdAuth {
    pub user: String,
    pub password: Secret<String>,
}

/// The TLS and auth keys of `[store] etcd = { ... }` as written.
#[derive(Default)]
pub struct EtcdAccess<'a> {
    pub endpoints: &'a [String],
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub server_name: Option<&'a str>,
    pub user: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    /// `TIDEWAY_ETCD_PASSWORD`, if set.
    pub password_env: Option<String>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read the {what}: {e}", path.display()))
}

impl EtcdAccess<'_> {
    /// TLS and auth from the keys; the error says what is wrong (for the caller to place).
    pub fn load(&self) -> Result<(Option<EtcdTls>, Option<EtcdAuth>), String> {
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        let tls = match self.ca {
            None if self.cert.is_some() || self.key.is_some() || self.server_name.is_some() => {
                return Err(
                    "etcd cert, key and server_name need ca (the CA of etcd's certificate)".into(),
                )
            }
            None if https > 0 => {
                return Err(
                    "an https:// etcd endpoint needs ca (the CA of etcd's certificate)".into(),
                )
            }
            None => None,
            Some(_) if https != self.endpoints.len() => {
                return Err("etcd with ca (TLS) needs every endpoint to be https://".into())
            }
            Some(ca) => Some(self.tls(ca)?),
        };
        let auth = match (self.user, self.password_file, &self.password_env) {
            (None, None, _) => None,
            (None, Some(_), _) => return Err("etcd password_file needs user".into()),
            (Some(""), _, _) => return Err("etcd user must not be empty".into()),
            (Some(user), Some(file), _) => {
                let text = String::from_utf8(read(file, "etcd password")?)
                    .map_err(|_| format!("{}: the etcd password is not UTF-8", file.display()))?;
                let password = text.trim_end_matches(['\r', '\n']).to_string();
                Some(EtcdAuth {
                    user: user.to_string(),
                    password: Secret(password),
                })
            }
            (Some(user), None, Some(env)) => Some(EtcdAuth {
                user: user.to_string(),
                password: Secret(env.clone()),
            }),
            (Some(_), None, None) => {
                return Err(format!(
                    "etcd user needs a password: password_file, or the {ETCD_PASSWORD_ENV} environment variable"
                ))
            }
        };
        if auth.is_some() && tls.is_none() {
            return Err(
                "etcd user over http:// endpoints would send its password in clear: use https:// endpoints with ca"
                    .into(),
            );
        }
        Ok((tls, auth))
    }

    fn tls(&self, ca: &Path) -> Result<EtcdTls, String> {
        let ca_pem = read(ca, "etcd CA")?;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&ca_pem)
            .filter(Result::is_ok)
            .count();
        if certs == 0 {
            return Err(format!(
                "{}: no CA certificate (expected PEM CERTIFICATE blocks)",
                ca.display()
            ));
        }
        let identity = match (self.cert, self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                // The same checks as a listener's certificate: readable, and the key matches.
                let files = super::tls::TlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                };
                super::tls::load_cert(&files).map_err(|e| e.to_string())?;
                Some((
                    read(cert, "etcd client certificate")?,
                    Secret(read(key, "etcd client key")?),
                ))
            }
            _ => {
                return Err(
                    "etcd cert and key go together (the client certificate and its key)".into(),
                )
            }
        };
        Ok(EtcdTls {
            ca_pem,
            identity,
            server_name: self.server_name.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_half_settings_are_errors() {
        let auth = EtcdAuth {
            user: "root".into(),
            password: Secret("hunter2".into()),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        let http = ["http://127.0.0.1:2379".to_string()];
        let https = ["https://127.0.0.1:2379".to_string()];
        let none = EtcdAccess {
            endpoints: &http,
            ..Default::default()
        };
        assert_eq!(none.load().unwrap(), (None, None));
        let no_ca = EtcdAccess {
            endpoints: &https,
            ..Default::default()
        };
        assert!(no_ca.load().unwrap_err().contains("needs ca"));
        let no_password = EtcdAccess {
            endpoints: &http,
            user: Some("root"),
            ..Default::default()
        };
        assert!(no_password.load().unwrap_err().contains(ETCD_PASSWORD_ENV));
        let env = EtcdAccess {
            endpoints: &http,
            user: Some("root"),
            password_env: Some("pw".into()),
            ..Default::default()
        };
        // A password over plain HTTP is refused, wherever it comes from.
        assert!(env.load().unwrap_err().contains("in clear"));
        let plain_with_ca = EtcdAccess {
            endpoints: &http,
            ca: Some(Path::new("/nonexistent")),
            ..Default::default()
        };
        assert!(plain_with_ca.load().unwrap_err().contains("https://"));
    }
}
