//! `tideway ctl`: the admin API from the command line.

use reqwest::{Client, Method};
use serde_json::Value;

/// What to do.
#[derive(Debug, Clone)]
pub enum CtlCommand {
    List,
    Show {
        nginx: bool,
        upstream: String,
    },
    SetState {
        upstream: String,
        id: String,
        state: &'static str,
    },
    Drain {
        upstream: String,
        id: String,
        wait: Option<String>,
        /// This drain's close spread (`?spread=`).
        spread: Option<String>,
    },
    Weight {
        upstream: String,
        id: String,
        weight: u32,
    },
    /// Drain then remove (DELETE): what a leaving backend does last.
    Deregister {
        upstream: String,
        id: String,
    },
}

/// Why a ctl call failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
}

/// Run one command against the admin API at `admin` and return its JSON answer (or, for a
/// text answer such as an nginx block, a JSON string). `secret`: a registration's secret, sent
/// as `X-Registration-Secret`, so the register token can drain and deregister that backend.
pub async fn run(
    admin: &str,
    token: &str,
    secret: Option<&str>,
    cmd: &CtlCommand,
) -> Result<Value, CtlError> {
    run_with(&Client::new(), admin, token, secret, cmd).await
}

/// [`run`] with `client` (one for an admin API over TLS: [`super::admin_tls::client`]).
pub async fn run_with(
    client: &Client,
    admin: &str,
    token: &str,
    secret: Option<&str>,
    cmd: &CtlCommand,
) -> Result<Value, CtlError> {
    let base = admin.trim_end_matches('/');
    let (method, path, body) = match cmd {
        CtlCommand::List => (Method::GET, "/v1/upstreams".to_string(), None),
        CtlCommand::Show { upstream, nginx } => (
            Method::GET,
            if *nginx {
                format!("/v1/upstreams/{upstream}?format=nginx")
            } else {
                format!("/v1/upstreams/{upstream}")
            },
            None,
        ),
        CtlCommand::SetState {
            upstream,
            id,
            state,
        } => (
            Method::POST,
            format!("/v1/upstreams/{upstream}/backends/{id}/state"),
            Some(serde_json::json!({ "state": state })),
        ),
        // `wait` and `spread` go in the query string (below).
        CtlCommand::Drain { upstream, id, .. } => (
            Method::POST,
            format!("/v1/upstreams/{upstream}/backends/{id}/drain"),
            None,
        ),
        CtlCommand::Weight {
            upstream,
            id,
            weight,
        } => (
            Method::PATCH,
            format!("/v1/upstreams/{upstream}/backends/{id}"),
            Some(serde_json::json!({ "weight": weight })),
        ),
        CtlCommand::Deregister { upstream, id } => (
            Method::DELETE,
            format!("/v1/upstreams/{upstream}/backends/{id}"),
            None,
        ),
    };
    let query: Vec<(&str, &str)> = match cmd {
        CtlCommand::Drain { wait, spread, .. } => [("wait", wait), ("spread", spread)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_deref()?)))
            .collect(),
        _ => Vec::new(),
    };
    let url = format!("{base}{path}");
    let mut req = client
        .request(method, &url)
        .bearer_auth(token)
        .query(&query);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(secret) = secret {
        req = req.header(crate::admin::owners::SECRET_HEADER, secret);
    }
    let unreachable = |source| CtlError::Unreachable {
        url: url.clone(),
        source,
    };
    let resp = req.send().await.map_err(unreachable)?;
    let status = resp.status().as_u16();
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let value: Value = if is_json {
        resp.json().await.unwrap_or(Value::Null)
    } else {
        Value::String(resp.text().await.unwrap_or_default())
    };
    if status >= 400 {
        let message = value["error"]
            .as_str()
            .unwrap_or("request refused")
            .to_string();
        return Err(CtlError::Refused { status, message });
    }
    Ok(value)
}
