//! Scale events with live WebSockets: after a scale-out, rebalancing moves exactly the sessions
//! whose key the ring moved (with 1001, so clients reconnect and nothing is lost); a scale-in by
//! DELETE drains the leaving backends onto the live ones. Real tideway, real demo backends,
//! real WebSocket clients (`tideway::cli::demo_client`).

mod common;

use common::*;
use std::time::{Duration, Instant};
use tideway::balance::key_hash;
use tideway::balance::ring::Ring;
use tideway::cli::demo_client::{Client, Options};

const SESSIONS: usize = 600;
const PER_SECOND: u32 = 100;

async fn register(p: &Proxy, b: &Backend) {
    p.register(&b.id, &b.addr.to_string()).await;
}

/// The backend a weight-1 ring over `ids` names for each uid, 1..=SESSIONS.
fn ring_owners(ids: &[&str]) -> Vec<String> {
    let ring = Ring::build(ids.iter().enumerate().map(|(i, id)| (*id, 1, i as u32)));
    (1..=SESSIONS)
        .map(|uid| {
            let i = ring
                .walk(key_hash(uid.to_string().as_bytes()))
                .next()
                .unwrap();
            ids[i as usize].to_string()
        })
        .collect()
}

fn placed_as(client: &Client, want: &[String]) -> bool {
    client
        .placement()
        .iter()
        .zip(want)
        .all(|(got, want)| got.as_deref() == Some(want.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_moves_exactly_the_keys_the_ring_moved_and_scale_in_drains() {
    let backends: Vec<Backend> = futures_util::future::join_all(
        (1..=6).map(|i| async move { backend(&format!("b{i}")).await }),
    )
    .await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"hash\"\nhash_key = \"query:uid\"\ndrain_timeout = \"2s\"\nrebalance = {{ per_second = {PER_SECOND} }}\n"
    ))
    .await;
    register(&p, &backends[0]).await;
    register(&p, &backends[1]).await;

    let client = Client::start(Options {
        url: p.ws_url("/chat"),
        connections: SESSIONS,
        key: "uid".into(),
        first_uid: 1,
        rate: 1.0,
    });
    let two = ring_owners(&["b1", "b2"]);
    wait_until(Duration::from_secs(60), || async {
        placed_as(&client, &two)
    })
    .await;
    let before = client.placement();

    // Scale out: four more register.
    let six = ring_owners(&["b1", "b2", "b3", "b4", "b5", "b6"]);
    let ideal = two.iter().zip(&six).filter(|(a, b)| a != b).count();
    let start = Instant::now();
    for b in &backends[2..] {
        register(&p, b).await;
    }
    let limit = Duration::from_secs_f64(SESSIONS as f64 / f64::from(PER_SECOND) + 5.0);
    wait_until(limit, || async { placed_as(&client, &six) }).await;
    let took = start.elapsed();
    let out = client.report();
    let after = client.placement();
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    eprintln!(
        "scale-out 2 -> 6: {ideal} keys moved by the ring, {moved} sessions moved, {} closed with 1001, \
         all placed in {took:?} (limit {limit:?}); abrupt {}, sent {}, echoed {}",
        out.going_away_closes, out.abrupt_closes, out.sent, out.echoed
    );
    assert_eq!(out.abrupt_closes, 0, "{out:?}");
    assert_eq!(out.other_closes, 0, "{out:?}");
    assert_eq!(moved, ideal, "exactly the sessions whose key moved");
    let ratio = out.going_away_closes as f64 / ideal as f64;
    eprintln!("moves against the ideal: {ratio:.3}x");
    assert!(
        ratio <= 1.05,
        "{} closes for {ideal} moved keys",
        out.going_away_closes
    );
    assert!(
        metric(&p, "tideway_rebalance_closed_total").await >= ideal as f64,
        "the moves are counted"
    );
    let shown = p.upstream_json().await["rebalance"]["moved"]
        .as_u64()
        .unwrap();
    assert!(
        shown >= ideal as u64,
        "the API (and the dashboard) show them: {shown}"
    );

    // Scale in: 6 -> 2 by DELETE, which drains (1001 at drain_timeout).
    let closed_before = out.going_away_closes;
    let start = Instant::now();
    for id in ["b3", "b4", "b5", "b6"] {
        p.deregister(id).await;
    }
    wait_until(Duration::from_secs(30), || async {
        placed_as(&client, &two)
    })
    .await;
    let took = start.elapsed();
    let end = client.stop().await;
    eprintln!(
        "scale-in 6 -> 2: {} closed with 1001, all on b1/b2 in {took:?}; abrupt {}, lost {}, sent {}, echoed {}, duplicates {}",
        end.going_away_closes - closed_before,
        end.abrupt_closes,
        end.lost,
        end.sent,
        end.echoed,
        end.duplicates
    );
    assert_eq!(end.abrupt_closes, 0, "{end:?}");
    assert_eq!(end.other_closes, 0, "{end:?}");
    assert_eq!(end.lost, 0, "no echo lost across the moves: {end:?}");
    assert!(end.sent > 0 && end.echoed == end.sent, "{end:?}");
    drop(backends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sheds_the_most_loaded_down_to_the_factor() {
    const N: usize = 200;
    let backends: Vec<Backend> = futures_util::future::join_all(
        (1..=4).map(|i| async move { backend(&format!("l{i}")).await }),
    )
    .await;
    let p = start_proxy(
        "[upstream.app]\nbalance = \"least_conn\"\nrebalance = { per_second = 200, factor = 1.25 }\n",
    )
    .await;
    register(&p, &backends[0]).await;
    register(&p, &backends[1]).await;
    let client = Client::start(Options {
        url: p.ws_url("/"),
        connections: N,
        key: "uid".into(),
        first_uid: 1,
        rate: 1.0,
    });
    wait_until(Duration::from_secs(60), || async {
        client.report().open == N
    })
    .await;
    let before = client.report().spread;
    assert_eq!(before.len(), 2, "{before:?}");

    register(&p, &backends[2]).await;
    register(&p, &backends[3]).await;
    // A share of 50 each; at most ceil(50 * 1.25) = 63 on any backend.
    wait_until(Duration::from_secs(20), || async {
        let r = client.report();
        r.open == N && r.spread.len() == 4 && r.spread.values().all(|&n| n <= 63)
    })
    .await;
    let spread = client.report().spread;
    let end = client.stop().await;
    eprintln!("least_conn 2 -> 4: {before:?} -> {spread:?}; {end:?}");
    // The two new backends were empty; the old ones only gave sessions away.
    assert!(end.going_away_closes <= (100 - 50) * 2 + 10, "{end:?}");
    assert_eq!(end.abrupt_closes, 0, "{end:?}");
    assert_eq!(end.lost, 0, "{end:?}");
}
