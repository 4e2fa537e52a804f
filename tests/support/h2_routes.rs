//! tideway for the HTTP/2 tests that need routes of tideway's own beside a proxied one: one
//! TLS listener with `http2 = true` (a certificate for `a.test`), `/` to the upstream `app`,
//! and `return` routes `/here` (200 `here`), `= /empty` (204) and `= /same` (304).

use crate::common::h2::make_cert;
use crate::common::{start_written, Proxy};
use std::net::SocketAddr;

/// Start it with `app` at `backend` and `limits` (a `limits = {...}` line, or "") in the
/// listener.
pub async fn proxy_with_returns(backend: SocketAddr, limits: &str) -> Proxy {
    start_written(&[], |http, admin, dir| {
        let c = make_cert(dir, "a", &["a.test"]);
        format!(
            "[admin]\nlisten = \"{admin}\"\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{http}\"\nhttp2 = true\ntls = {{ cert = {:?}, key = {:?} }}\n{limits}\n[[listener.route]]\npath = \"/\"\nupstream = \"app\"\n[[listener.route]]\npath = \"/here\"\nreturn = {{ code = 200, text = \"here\" }}\n[[listener.route]]\npath = \"= /empty\"\nreturn = {{ code = 204, text = \"\" }}\n[[listener.route]]\npath = \"= /same\"\nreturn = {{ code = 304, text = \"\" }}\n\n[upstream.app]\nbackends = [{{ addr = \"{backend}\" }}]\n",
            dir.join("data").display(),
            c.cert,
            c.key,
        )
    })
    .await
}
