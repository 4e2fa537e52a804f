//! How a register-token request proves it made a registration: the secret its registration
//! returned, sent in `X-Registration-Secret` ([`crate::registry::owners`] checks it).

use axum::http::HeaderMap;

/// The header carrying a registration's secret.
pub const SECRET_HEADER: &str = "x-registration-secret";

/// The secret a request carries, if any.
pub fn secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
