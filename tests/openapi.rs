//! The admin API describes itself (`/v1/openapi.json`, generated from the handlers), and every
//! error, 404 and 405 included, is JSON.

mod common;

use common::*;
use reqwest::Method;

/// The document a running tideway serves.
async fn document(p: &Proxy) -> serde_json::Value {
    reqwest::get(p.admin_url("/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every route the admin router serves (besides the dashboard page and the document itself).
const ROUTES: [(&str, &str); 17] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/v1/reload"),
    ("get", "/v1/routes"),
    ("get", "/v1/history"),
    ("get", "/v1/fleet"),
    ("get", "/v1/closes"),
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
    let doc = document(&p).await;
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

/// The operations of the document: (method, path, operation).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn every_answer_and_header_is_documented_once() {
    let p = start_proxy("[upstream.app]\n").await;
    let doc = document(&p).await;
    for (method, path, op) in operations(&doc) {
        let params: Vec<(String, String)> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            p["in"].as_str().unwrap().into(),
                            p["name"].as_str().unwrap().into(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut unique = params.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), params.len(), "{method} {path}: {params:?}");
        let answers = op["responses"].as_object().unwrap();
        let has = |s: &str| answers.contains_key(s);
        let schemes: Vec<&str> = op["security"]
            .as_array()
            .map(|s| {
                s.iter()
                    .flat_map(|o| o.as_object().unwrap().keys())
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default();
        if !schemes.is_empty() {
            assert!(has("401") && has("403"), "{method} {path}: {answers:?}");
        }
        if op.get("requestBody").is_some() {
            assert!(has("400") && has("413"), "{method} {path}");
        }
        if path.contains("{u}") {
            assert!(has("404"), "{method} {path}");
        }
        if path.contains("/backends") {
            assert!(has("409") && has("503"), "{method} {path}");
        }
        let secret = params.contains(&("header".into(), "X-Registration-Secret".into()));
        assert_eq!(secret, schemes.contains(&"register"), "{method} {path}");
    }
    assert!(doc["paths"]["/readyz"]["get"]["responses"]["503"].is_object());
}

#[tokio::test]
async fn the_schema_and_the_server_agree_on_the_bodies_schemathesis_found() {
    let b = backend("o1").await;
    let p = start_proxy(&format!("[upstream.app]\n{}\n", backends_toml(&[(&b, 1)]))).await;
    let doc = document(&p).await;
    let register = &doc["components"]["schemas"]["Register"]["properties"];
    // Refused by the server, so outside the schema: weight 0, an empty or non-ip:port addr.
    assert_eq!(register["weight"]["minimum"], 1, "{register}");
    assert_eq!(register["weight"]["maximum"], 1000);
    let addr = regex::Regex::new(register["addr"]["pattern"].as_str().unwrap()).unwrap();
    for bad in [
        "",
        "1.2.3.4",
        "256.1.1.1:80",
        "1.2.3.4:65536",
        "01.2.3.4:80",
        "x:80",
    ] {
        assert!(!addr.is_match(bad), "{bad}");
    }
    assert!(addr.is_match("10.0.0.7:2346"));
    let post = |body: serde_json::Value| {
        p.admin_req(Method::POST, "/v1/upstreams/app/backends", ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    for bad in [
        serde_json::json!({"addr": "127.0.0.1:7001", "weight": 0}),
        serde_json::json!({"addr": ""}),
    ] {
        let r = post(bad.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // A whole number written as 3.0 is an `integer` to JSON Schema: accepted.
    let r =
        post(serde_json::json!({"addr": "127.0.0.1:7001", "id": "w3", "weight": 3.0, "ttl": 60.0}))
            .await
            .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(
        post(serde_json::json!({"addr": "127.0.0.1:7002", "weight": 2.5}))
            .await
            .unwrap()
            .status(),
        400
    );
    // A `null` heartbeat is no body: the TTL stays.
    for body in ["null", "{}", "{\"ttl\": null}", ""] {
        let r = p
            .admin_req(
                Method::PUT,
                "/v1/upstreams/app/backends/w3/heartbeat",
                ADMIN_TOKEN,
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{body:?}: {}", r.text().await.unwrap());
    }
    // Extractors' refusals are JSON too: a query string that does not parse.
    let r = p
        .admin_req(
            Method::GET,
            "/v1/upstreams/app?format=a&format=b",
            ADMIN_TOKEN,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

/// openapi-spec-validator and schemathesis (`scripts/api-check.sh`) against the binary.
#[test]
fn openapi_spec_validator_and_schemathesis_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/api-check.sh"))
        .arg(env!("CARGO_BIN_EXE_tideway"))
        .current_dir(root)
        .output()
        .expect("run scripts/api-check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "scripts/api-check.sh failed (see above)"
    );
    assert!(stdout.contains("openapi.json: OK"), "no validator verdict");
    assert_eq!(
        stdout.matches("generated, ").count(),
        2,
        "two schemathesis runs"
    );
    assert!(stdout.contains("api-check: ok"));
}
