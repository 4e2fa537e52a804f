//! The admin API describes itself (`/v1/openapi.json`, generated from the handlers), and every
//! error, 404 and 405 included, is JSON.

mod common;

use common::*;
use reqwest::Method;

/// Every route the admin router serves (besides the dashboard page and the document itself).
const ROUTES: [(&str, &str); 14] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/v1/reload"),
    ("get", "/v1/routes"),
    ("get", "/v1/upstreams"),
    ("get", "/v1/upstreams/{u}"),
    ("get", "/v1/upstreams/{u}/scale"),
    ("post", "/v1/upstreams/{u}/backends"),
    ("put", "/v1/upstreams/{u}/backends/{id}/heartbeat"),
    ("delete", "/v1/upstreams/{u}/backends/{id}"),
    ("patch", "/v1/upstreams/{u}/backends/{id}"),
    ("post", "/v1/upstreams/{u}/backends/{id}/state"),
    ("post", "/v1/upstreams/{u}/backends/{id}/drain"),
];

#[tokio::test]
async fn the_document_covers_every_route_and_every_documented_route_is_served() {
    let b = backend("o1").await;
    let p = start_proxy(&format!("[upstream.app]\n{}\n", backends_toml(&[(&b, 1)]))).await;
    let doc: serde_json::Value = reqwest::get(p.admin_url("/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    assert!(doc["components"]["securitySchemes"]["admin"].is_object());
    assert!(doc["components"]["schemas"]["Register"].is_object());
    // Each documented route is served: with the admin token, never 404 "no such endpoint" or 405.
    for (method, path) in ROUTES {
        let path = path.replace("{u}", "app").replace("{id}", "o1");
        let m: Method = method.to_uppercase().parse().unwrap();
        let r = p
            .admin_req(m.clone(), &path, ADMIN_TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            status != 405 && !body.contains("no such endpoint"),
            "{method} {path}: {status} {body}"
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let p = start_proxy("[upstream.app]\n").await;
    for (m, path, status) in [
        (Method::GET, "/nope", 404),
        (Method::PUT, "/v1/upstreams", 405),
        (Method::DELETE, "/healthz", 405),
    ] {
        let r = p.admin_req(m, path, ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
}
