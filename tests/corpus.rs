//! Hostile-input corpus: raw client bytes (smuggling, framing tricks, upgrade tricks) sent
//! through tideway and through nginx, each in front of a recording backend that frames requests
//! like PHP Workerman 4.x.
//!
//! Each case runs through tideway, where the test asserts what the HTTP engine's spec requires
//! (the answers, and exactly which requests the backend framed, with the spec's invariants on
//! each), and through nginx, whose answers and backend are recorded. The table of both runs
//! goes to `target/differential.md`; `UPDATE_DOCS=1` copies it into docs/security.md between the
//! differential markers, otherwise docs/security.md must already hold exactly this table.
//!
//! Every case gets its own backend and its own proxy, so no pooled connection leaks from one
//! case into the next. The cases are data, in `corpus/cases.rs`.

#[path = "corpus/cases.rs"]
mod cases;
#[path = "corpus/client.rs"]
mod client;
mod common;
#[path = "corpus/nginx.rs"]
mod nginx;
#[path = "corpus/summary.rs"]
mod summary;
#[path = "support/workerman.rs"]
mod workerman;

use cases::{Case, Run, Want};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use workerman::{Recorded, Workerman};

/// Send every client of `case` to `addr`, holding each connection until the case ends, then
/// read what the backend framed once it has gone quiet.
async fn run_case(addr: SocketAddr, case: &Case, backend: &Workerman) -> Run {
    let mut held = Vec::new();
    let mut outcomes = Vec::new();
    for c in &case.clients {
        let (outcome, open) = client::run(addr, c).await;
        outcomes.push(outcome);
        held.extend(open);
    }
    backend
        .settle(Duration::from_millis(150), Duration::from_secs(2))
        .await;
    Run {
        outcomes,
        requests: backend.requests(),
        upgrades: backend.upgrades(),
        store: backend.store(),
        unframed: backend.unframed(),
    }
}

/// Everything tideway must have done for `case`, as one error listing what it did not.
fn verify(case: &Case, run: &Run) -> Result<(), String> {
    let mut errors = Vec::new();
    let (answers, required) = (summary::answers(run, case), summary::required_answers(case));
    if answers != required {
        errors.push(format!("answered `{answers}`, must be `{required}`"));
    }
    let (saw, required) = (
        summary::saw(&run.requests, &run.upgrades, run.unframed),
        summary::required_saw(case),
    );
    if saw != required {
        errors.push(format!("backend saw `{saw}`, must be `{required}`"));
    }
    for (got, want) in run.requests.iter().zip(&case.want) {
        errors.extend(matches(got, want));
    }
    for r in &run.requests {
        errors.extend(spec_invariants(r));
    }
    if let Some(check) = case.check {
        errors.extend(check(run).err());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("    {}", errors.join("\n    ")))
    }
}

/// Where `got` is not exactly the request `want` describes.
fn matches(got: &Recorded, want: &Want) -> Vec<String> {
    let mut errors = Vec::new();
    if got.request_line() != want.line {
        errors.push(format!(
            "request line {:?}, not {:?}",
            got.request_line(),
            want.line
        ));
    }
    if got.body() != want.body {
        errors.push(format!(
            "{}: body {:?}, not {:?}",
            want.line,
            String::from_utf8_lossy(got.body()),
            String::from_utf8_lossy(&want.body)
        ));
    }
    let lines: Vec<String> = got
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_ascii_lowercase()))
        .collect();
    for h in &want.headers {
        if !lines.contains(h) {
            errors.push(format!("{}: no `{h}` in {lines:?}", want.line));
        }
    }
    errors
}

/// What the spec says of every head tideway sends a backend.
fn spec_invariants(r: &Recorded) -> Vec<String> {
    let line = r.request_line();
    let mut errors = Vec::new();
    let mut fail = |what: String| errors.push(format!("{line}: {what}"));
    if r.version() != "HTTP/1.1" {
        fail("not sent as HTTP/1.1".into());
    }
    let cl = r.header_values("content-length");
    match cl.as_slice() {
        [] if !r.body().is_empty() => fail("a body without content-length".into()),
        [] => {}
        [v] if v.parse::<usize>().ok() == Some(r.body().len())
            && v.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => fail(format!(
            "content-length {cl:?} for a {}-byte body",
            r.body().len()
        )),
    }
    for (name, values) in [
        ("x-real-ip", vec!["127.0.0.1"]),
        ("x-forwarded-proto", vec!["http"]),
    ] {
        if r.header_values(name) != values {
            fail(format!("{name} {:?}", r.header_values(name)));
        }
    }
    let upgrade = r.header_values("upgrade") == ["websocket"];
    for name in [
        "transfer-encoding",
        "expect",
        "keep-alive",
        "te",
        "trailer",
        "proxy-connection",
    ] {
        if !r.header_values(name).is_empty() {
            fail(format!("forwarded {name}"));
        }
    }
    if !upgrade && !r.header_values("connection").is_empty() {
        fail("forwarded connection without a WebSocket upgrade".into());
    }
    errors
}

/// Each case through tideway (asserted against the spec) and through nginx (recorded), and
/// the table of both as they ran.
#[tokio::test]
async fn corpus_through_tideway_and_nginx() {
    let cases = cases::all();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut unexplained = Vec::new();
    for case in &cases {
        let backend = Workerman::start(case.backend).await;
        let upstream = format!(
            "[upstream.app]\nbackends = [{{ addr = \"{}\", id = \"workerman\" }}]\n",
            backend.addr()
        );
        let proxy = common::start_proxy_with("", &upstream).await;
        let ours = run_case(proxy.http, case, &backend).await;
        drop(proxy);
        if let Err(e) = verify(case, &ours) {
            failures.push(format!("- {}:\n{e}", case.name));
        }

        let backend = Workerman::start(case.backend).await;
        let nginx = nginx::Nginx::start(backend.addr()).await;
        let theirs = run_case(nginx.addr, case, &backend).await;
        drop(nginx);
        let row = summary::Row {
            case: case.name.clone(),
            nginx_answer: summary::answers(&theirs, case),
            nginx_saw: summary::saw(&theirs.requests, &theirs.upgrades, theirs.unframed),
            tideway_answer: summary::answers(&ours, case),
            tideway_saw: summary::saw(&ours.requests, &ours.upgrades, ours.unframed),
            why: String::new(),
        };
        let same = row.nginx_answer == row.tideway_answer && row.nginx_saw == row.tideway_saw;
        let why = if same { "same" } else { case.why };
        if why.is_empty() {
            unexplained.push(case.name.clone());
        }
        rows.push(summary::Row {
            why: why.to_string(),
            ..row
        });
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let table = summary::table(&rows);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(manifest.join("target")).unwrap();
    std::fs::write(manifest.join("target/differential.md"), &table).unwrap();
    println!("{table}");
    assert!(
        unexplained.is_empty(),
        "nginx and tideway differ with no reason given (write one in cases.rs): {unexplained:?}"
    );

    let doc_path = manifest.join("docs/security.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let updated = summary::replace_section(&doc, &table)
        .expect("docs/security.md has the <!-- differential:start --> and :end markers");
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
        std::fs::write(&doc_path, updated).unwrap();
    } else {
        assert!(
            updated == doc,
            "docs/security.md's differential table is stale: run \
             `UPDATE_DOCS=1 cargo test --test corpus nginx` (new table in target/differential.md)"
        );
    }
}
