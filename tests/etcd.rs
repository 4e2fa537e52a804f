//! etcd: real etcd processes (Debian `etcd-server`) on free loopback ports with temp data dirs.

mod common;

use common::etcd::Etcd;
use common::*;
use etcd_client::{Client, PutOptions};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

async fn ids(p: &Proxy) -> Vec<String> {
    p.backends().await.into_iter().map(|b| b.0).collect()
}

#[tokio::test]
async fn leased_keys_are_routed_and_leave_with_their_lease() {
    let etcd = Etcd::start().await;
    let (a, b) = (backend("a").await, backend("b").await);
    let p = start_proxy_full(
        &etcd.store(),
        "",
        "[upstream.app]\nbalance = \"round_robin\"\nbackends = []",
    )
    .await;
    let mut c = etcd.client().await;
    let lease = c.lease_grant(30, None).await.unwrap().id();
    // Plain value under a lease, as `etcdctl put --lease=...` writes it.
    c.put(
        "/tw/upstreams/app/backends/a",
        a.addr.to_string(),
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    wait_until(Duration::from_secs(3), || async { ids(&p).await == ["a"] }).await;
    assert_eq!(backend_id(&client, &p.url("/")).await, "a");
    // JSON value.
    c.put(
        "/tw/upstreams/app/backends/b",
        format!("{{\"addr\":\"{}\",\"weight\":2}}", b.addr),
        None,
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(3), || async {
        ids(&p).await == ["a", "b"]
    })
    .await;
    assert_eq!(p.backends().await[1].3, 2);
    // Garbage is logged, counted and ignored; the pool is untouched.
    let before = p.backends().await;
    c.put("/tw/upstreams/app/backends/junk", "not an address", None)
        .await
        .unwrap();
    wait_until(Duration::from_secs(3), || async {
        metric(&p, "tideway_etcd_malformed_total").await >= 1.0
    })
    .await;
    assert_eq!(p.backends().await, before);
    // Revoking the lease drains a, then removes it.
    c.lease_revoke(lease).await.unwrap();
    wait_until(Duration::from_secs(3), || async { ids(&p).await == ["b"] }).await;
    for _ in 0..10 {
        assert_eq!(backend_id(&client, &p.url("/")).await, "b");
    }
}

#[tokio::test]
async fn after_a_cut_watch_and_compaction_the_pool_converges_to_etcd() {
    let mut etcd = Etcd::start().await;
    let a = backend("x").await;
    let p = start_proxy_full(&etcd.store(), "", "[upstream.app]\nbackends = []").await;
    let mut c = etcd.client().await;
    wait_until(Duration::from_secs(3), || async {
        metric(&p, "tideway_etcd_up").await == 1.0
    })
    .await;
    // Freeze tideway, churn keys and compact, then cut its watch by restarting etcd.
    Command::new("kill")
        .args(["-STOP", &p.child.id().to_string()])
        .status()
        .unwrap();
    for i in 0..50 {
        c.put(
            format!("/tw/upstreams/app/backends/k{i:02}"),
            a.addr.to_string(),
            None,
        )
        .await
        .unwrap();
    }
    for i in 0..40 {
        c.delete(format!("/tw/upstreams/app/backends/k{i:02}"), None)
            .await
            .unwrap();
    }
    let rev = c.get("x", None).await.unwrap().header().unwrap().revision();
    c.compact(rev, None).await.unwrap();
    etcd.stop();
    etcd.resume().await;
    Command::new("kill")
        .args(["-CONT", &p.child.id().to_string()])
        .status()
        .unwrap();
    let expected: Vec<String> = (40..50).map(|i| format!("k{i:02}")).collect();
    wait_until(Duration::from_secs(10), || async {
        ids(&p).await == expected
    })
    .await;
    assert!(metric(&p, "tideway_etcd_sessions_lost_total").await >= 1.0);
}

#[tokio::test]
async fn an_etcd_outage_fails_no_request_and_a_restart_serves_the_snapshot() {
    let mut etcd = Etcd::start().await;
    let (a, b) = (backend("a").await, backend("b").await);
    let mut p = start_proxy_full(&etcd.store(), "", "[upstream.app]\nbackends = []").await;
    let mut c = etcd.client().await;
    c.put("/tw/upstreams/app/backends/a", a.addr.to_string(), None)
        .await
        .unwrap();
    wait_until(Duration::from_secs(3), || async { ids(&p).await == ["a"] }).await;

    // Steady GET load while etcd is down for 30 s.
    let url = p.url("/");
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let (mut ok, mut failed) = (0u32, 0u32);
        let end = Instant::now() + Duration::from_secs(31);
        while Instant::now() < end {
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    });
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (ok, failed) = load.await.unwrap();
    println!("etcd down 30 s: {ok} requests ok, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 1000);

    // Restart tideway while etcd is still down: it serves the saved pool.
    p.restart().await;
    let client = reqwest::Client::new();
    assert_eq!(ids(&p).await, ["a"]);
    assert_eq!(backend_id(&client, &p.url("/")).await, "a");

    // etcd returns; a new key is routed within 2 s.
    etcd.resume().await;
    let mut c = etcd.client().await;
    wait_until(Duration::from_secs(10), || async {
        metric(&p, "tideway_etcd_up").await == 1.0
    })
    .await;
    c.put("/tw/upstreams/app/backends/b", b.addr.to_string(), None)
        .await
        .unwrap();
    let took = wait_until(Duration::from_secs(2), || async {
        ids(&p).await == ["a", "b"]
    })
    .await;
    println!("new key routed {took:?} after the put");
}

async fn owners(p: &Proxy, uids: u32) -> Vec<String> {
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let url = p.url("/");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut out = Vec::new();
            for uid in (t..uids).step_by(8) {
                out.push((uid, backend_id(&client, &format!("{url}?uid={uid}")).await));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.into_iter().map(|x| x.1).collect()
}

#[tokio::test]
async fn two_instances_on_one_etcd_agree() {
    let etcd = Etcd::start().await;
    let upstream = "[upstream.app]\nbalance = \"hash\"\nhash_key = \"query:uid\"\nbackends = []";
    let a = start_proxy_full(&etcd.store(), "", upstream).await;
    let b = start_proxy_full(&etcd.store(), "", upstream).await;
    let mut demo = Vec::new();
    for i in 0..5 {
        demo.push(backend(&format!("d{i}")).await);
    }
    // A registration through A's API shows on B within 1 s.
    let r = a
        .admin_req(
            reqwest::Method::POST,
            "/v1/upstreams/app/backends",
            REGISTER_TOKEN,
        )
        .json(&serde_json::json!({"addr": demo[0].addr.to_string(), "id": "d0", "ttl": "30s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let registered: serde_json::Value = r.json().await.unwrap();
    let secret = registered["secret"].as_str().unwrap().to_string();
    let took = wait_until(Duration::from_secs(1), || async { ids(&b).await == ["d0"] }).await;
    println!("registration via A seen on B after {took:?}");
    for d in &demo[1..] {
        let r = a
            .admin_req(
                reqwest::Method::POST,
                "/v1/upstreams/app/backends",
                REGISTER_TOKEN,
            )
            .json(&serde_json::json!({"addr": d.addr.to_string(), "id": d.id, "ttl": "30s"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    wait_until(Duration::from_secs(1), || async {
        ids(&b).await.len() == 5
    })
    .await;
    // A heartbeat through B (the lease is read from etcd).
    let hb = b
        .admin_req(
            reqwest::Method::PUT,
            "/v1/upstreams/app/backends/d0/heartbeat",
            REGISTER_TOKEN,
        )
        .header("x-registration-secret", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), 200);
    // A toggle through B shows on A within 1 s.
    let r = b
        .admin_req(
            reqwest::Method::PATCH,
            "/v1/upstreams/app/backends/d3",
            ADMIN_TOKEN,
        )
        .json(&serde_json::json!({"weight": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let took = wait_until(Duration::from_secs(1), || async {
        a.backends().await.iter().any(|x| x.0 == "d3" && x.3 == 4)
    })
    .await;
    println!("toggle via B seen on A after {took:?}");
    // Both map 10,000 keys identically.
    let (on_a, on_b) = (owners(&a, 10_000).await, owners(&b, 10_000).await);
    let differ = on_a.iter().zip(&on_b).filter(|(x, y)| x != y).count();
    println!("10,000 uids: {differ} map differently");
    for (uid, (x, y)) in on_a
        .iter()
        .zip(&on_b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
    {
        println!("uid {uid}: A -> {x}, B -> {y}");
    }
    if differ > 0 {
        for p in [&a, &b] {
            let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default();
            for l in log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            {
                println!("log: {l}");
            }
        }
    }
    assert_eq!(differ, 0);
    // Deregistering through B drains and removes it on A too.
    let r = b
        .admin_req(
            reqwest::Method::DELETE,
            "/v1/upstreams/app/backends/d0",
            REGISTER_TOKEN,
        )
        .header("x-registration-secret", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_until(Duration::from_secs(2), || async {
        !ids(&a).await.contains(&"d0".to_string())
    })
    .await;
}

/// A 3-member etcd cluster on loopback.
struct Cluster {
    members: Vec<Option<Child>>,
    client_urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.iter_mut().flatten() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, pp))| format!("m{i}=http://127.0.0.1:{pp}"))
            .collect();
        let mut members = Vec::new();
        let mut client_urls = Vec::new();
        for (i, (cp, pp)) in ports.iter().enumerate() {
            let url = format!("http://127.0.0.1:{cp}");
            let peer = format!("http://127.0.0.1:{pp}");
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args([
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--initial-cluster-token", "tideway-test"])
                // Quick elections, so the test measures tideway rather than etcd's defaults.
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            members.push(Some(child));
            client_urls.push(url);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Client::connect(&client_urls, None).await {
                if c.put("probe", "1", None).await.is_ok() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "etcd cluster did not form");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Cluster {
            members,
            client_urls,
            _dir: dir,
        }
    }

    /// Index of the current leader.
    async fn leader(&self) -> usize {
        for (i, url) in self.client_urls.iter().enumerate() {
            let mut c = Client::connect([url], None).await.unwrap();
            let st = c.status().await.unwrap();
            if st.leader() == st.header().unwrap().member_id() {
                return i;
            }
        }
        panic!("no leader");
    }
}

#[tokio::test]
async fn a_leader_kill_in_a_3_member_cluster_does_not_stop_registrations() {
    let mut cluster = Cluster::start().await;
    let endpoints: Vec<String> = cluster
        .client_urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let store = format!(
        "etcd = {{ endpoints = [{}], prefix = \"/tw\" }}",
        endpoints.join(", ")
    );
    let p = start_proxy_full(&store, "", "[upstream.app]\nbackends = []").await;
    let (a, b) = (backend("a").await, backend("b").await);
    let mut c = Client::connect(&cluster.client_urls, None).await.unwrap();
    c.put("/tw/upstreams/app/backends/a", a.addr.to_string(), None)
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), || async { ids(&p).await == ["a"] }).await;

    let leader = cluster.leader().await;
    let mut killed = cluster.members[leader].take().unwrap();
    killed.kill().unwrap();
    let _ = killed.wait();
    let survivors: Vec<String> = cluster
        .client_urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, u)| u.clone())
        .collect();
    // A new registration (retried until the survivors have elected a new leader).
    let start = Instant::now();
    let quick = etcd_client::ConnectOptions::new().with_timeout(Duration::from_millis(500));
    let mut c = Client::connect(&survivors, Some(quick)).await.unwrap();
    while c
        .put("/tw/upstreams/app/backends/b", b.addr.to_string(), None)
        .await
        .is_err()
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no new leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let put_done = start.elapsed();
    let took = wait_until(Duration::from_secs(5), || async {
        ids(&p).await == ["a", "b"]
    })
    .await;
    println!("leader m{leader} killed; put accepted after {put_done:?}; routed {took:?} after the put, {:?} after the kill", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "routed {:?} after the kill",
        start.elapsed()
    );
    let client = reqwest::Client::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(backend_id(&client, &p.url("/")).await);
    }
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn readyz_waits_for_the_first_etcd_list() {
    let mut etcd = Etcd::start().await;
    etcd.stop();
    let p = start_proxy_full(&etcd.store(), "", "[upstream.app]\nbackends = []").await;
    let c = reqwest::Client::new();
    // Alive, but not ready: etcd has never been listed and there is no local snapshot.
    assert_eq!(
        c.get(p.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let not_ready = c.get(p.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(not_ready.status(), 503);
    assert!(not_ready.text().await.unwrap().contains("\"error\""));
    etcd.resume().await;
    let waited = wait_until(Duration::from_secs(30), || async {
        c.get(p.admin_url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    println!("ready {waited:?} after etcd came up");
}

/// WebSockets through `p` until `n` of them sit on backend `id`.
async fn sockets_on(
    p: &Proxy,
    id: &str,
    n: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
{
    let mut on = Vec::new();
    for _ in 0..200 {
        let (ws, resp) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
            .await
            .unwrap();
        if resp.headers()["x-backend-id"] == id {
            on.push(ws);
            if on.len() == n {
                return on;
            }
        }
    }
    panic!("could not place {n} WebSockets on {id}");
}

#[tokio::test]
async fn a_drain_through_one_instance_holds_for_the_whole_fleet() {
    let etcd = Etcd::start().await;
    let (fa, fb) = (backend("fa").await, backend("fb").await);
    let upstream = format!(
        "[upstream.app]\nbalance = \"round_robin\"\ndrain_timeout = \"2s\"\nclose_spread = \"0s\"\nscale = {{ target_per_backend = 2, min = 1, max = 10 }}\nbackends = [{{ addr = \"{}\", id = \"fa\" }}, {{ addr = \"{}\", id = \"fb\" }}]",
        fa.addr, fb.addr
    );
    let one = start_proxy_full(&etcd.store(), "", &upstream).await;
    let two = start_proxy_full(&etcd.store(), "", &upstream).await;
    let mut on_one = sockets_on(&one, "fb", 3).await;
    let mut on_two = sockets_on(&two, "fb", 2).await;

    // /scale on either instance counts both: 5 WebSockets on fb, 3 + 2.
    for p in [&one, &two] {
        let counted = wait_until(Duration::from_secs(5), || async {
            let v = p.admin_json("/v1/upstreams/app/scale").await;
            v["active_connections"] == 5 && v["instances"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
        println!("scale counted both instances after {counted:?}");
    }

    // A drain through instance one, waiting; instance two stops routing to fb within 1 s.
    let drain = tokio::spawn({
        let req = one.admin_req(
            reqwest::Method::POST,
            "/v1/upstreams/app/backends/fb/drain?wait=20s",
            ADMIN_TOKEN,
        );
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    });
    let drained_at = Instant::now();
    let c = reqwest::Client::new();
    let stopped = wait_until(Duration::from_secs(1), || async {
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids.push(backend_id(&c, &two.url("/")).await);
        }
        ids.iter().all(|id| id == "fa")
    })
    .await;
    println!("instance two stopped routing to fb {stopped:?} after the drain");
    assert!(
        !drain.is_finished(),
        "drain?wait returned while both still hold WebSockets"
    );

    // After drain_timeout, every WebSocket on both instances gets 1001.
    for ws in on_one.iter_mut().chain(on_two.iter_mut()) {
        expect_going_away(ws, Duration::from_secs(10), "the drain's deadline").await;
    }
    let closed_after = drained_at.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1500),
        "{closed_after:?}"
    );
    // drain?wait returns once neither instance holds a connection to fb.
    let answer = tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("drain?wait returned")
        .unwrap();
    assert_eq!(
        answer,
        // The drain's close spread, the upstream's here: `close_spread = "0s"`.
        serde_json::json!({"active_connections": 0, "drained": true, "close_spread_ms": 0})
    );
    println!(
        "1001 on both instances {closed_after:?} after the drain; drain?wait answered after {:?}",
        drained_at.elapsed()
    );
}

#[tokio::test]
async fn racing_registrations_of_one_id_have_one_winner() {
    let etcd = Etcd::start().await;
    let upstream = "[upstream.app]\nbackends = []";
    let one = start_proxy_full(&etcd.store(), "", upstream).await;
    let two = start_proxy_full(&etcd.store(), "", upstream).await;
    let bodies = (1..=6)
        .map(|i| serde_json::json!({"addr": format!("10.9.0.{i}:80"), "id": "contested"}))
        .collect();
    let answers = register_at_once(&[&one, &two], bodies).await;
    let mut statuses: Vec<u16> = answers.into_iter().map(|a| a.0).collect();
    statuses.sort();
    println!("six racing registrations of one id: {statuses:?}");
    assert_eq!(made(&statuses), 1, "{statuses:?}");
    // etcd holds the winner's address, and both instances agree on it.
    let winner = wait_until(Duration::from_secs(5), || async {
        let a = one.backends().await;
        let b = two.backends().await;
        a.len() == 1 && a == b
    })
    .await;
    println!("both instances agree {winner:?} after the race");
}

#[tokio::test]
async fn the_autoscale_hook_runs_once_for_the_fleet_with_the_fleet_count() {
    let etcd = Etcd::start().await;
    let (fa, fb) = (backend("fa").await, backend("fb").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs");
    let upstream = format!(
        "[upstream.app]\nbalance = \"round_robin\"\nscale = {{ target_per_backend = 2, min = 1, max = 10 }}\nbackends = [{{ addr = \"{}\", id = \"fa\" }}, {{ addr = \"{}\", id = \"fb\" }}]\n\
         [upstream.app.autoscale]\nexec = \"echo $TIDEWAY_INSTANCE $TIDEWAY_BACKENDS $TIDEWAY_ACTIVE_CONNECTIONS >> {}\"\ncooldown = \"500ms\"\nhysteresis = 0.0\ninterval = \"100ms\"\n",
        fa.addr, fb.addr, file.display()
    );
    let one = start_proxy_full(&etcd.store(), "", &upstream).await;
    let two = start_proxy_full(&etcd.store(), "", &upstream).await;
    let runs = || -> Vec<Vec<String>> {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    // Each instance must know the other before the load comes, or both would lead.
    for p in [&one, &two] {
        wait_until(Duration::from_secs(10), || async {
            let v = p.admin_json("/v1/upstreams/app/scale").await;
            v["instances"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    }
    // 3 WebSockets through one, 2 through two: 5 in the fleet, 3 backends at 2 each.
    let mut held = sockets_on(&one, "fa", 3).await;
    held.extend(sockets_on(&two, "fa", 2).await);
    wait_until(Duration::from_secs(20), || async {
        runs().iter().any(|r| r[1] == "3")
    })
    .await;
    // Then all close: back to 1.
    drop(held);
    wait_until(Duration::from_secs(20), || async {
        runs().last().is_some_and(|r| r[1] == "1")
    })
    .await;
    let all = runs();
    let leader = &all[0][0];
    assert!(
        all.iter().all(|r| &r[0] == leader),
        "one instance runs the hook: {all:?}"
    );
    // 3 backends needs 5 connections, more than either instance ever holds alone (at most
    // 3 + 1 being placed): the count is the fleet's.
    let three = all.iter().find(|r| r[1] == "3").unwrap();
    assert!(three[2].parse::<u64>().unwrap() >= 5, "{all:?}");
    assert_eq!(all.last().unwrap()[1], "1", "{all:?}");
    println!("hook runs: {all:?}");
}

/// Backend `id` of upstream `app` as the admin API shows it.
async fn view(p: &Proxy, id: &str) -> serde_json::Value {
    let v = p.upstream_json().await;
    v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {v}"))
        .clone()
}

#[tokio::test]
async fn a_put_to_one_backend_leaves_the_others_untouched() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let etcd = Etcd::start().await;
    let (a, b) = (backend("a").await, backend("b").await);
    let p = start_proxy_full(&etcd.store(), "", "[upstream.app]\nbackends = []").await;
    let mut c = etcd.client().await;
    c.put("/tw/upstreams/app/backends/a", a.addr.to_string(), None)
        .await
        .unwrap();
    // An operator's weight on a, through its etcd state key.
    c.put("/tw/upstreams/app/state/a", r#"{"weight":5}"#, None)
        .await
        .unwrap();
    wait_until(Duration::from_secs(3), || async {
        p.backends().await == [("a".into(), a.addr.to_string(), "active".into(), 5)]
    })
    .await;
    // A WebSocket held open through a, and requests a has served.
    let (mut ws, resp) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-backend-id"], "a");
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(backend_id(&client, &p.url("/")).await, "a");
    }
    let before = view(&p, "a").await;
    assert_eq!(before["active_connections"], 1, "{before}");
    assert!(before["requests_total"].as_u64().unwrap() >= 3, "{before}");

    // Puts to b: added, then its weight changed; then garbage put to a, which is ignored.
    c.put("/tw/upstreams/app/backends/b", b.addr.to_string(), None)
        .await
        .unwrap();
    c.put(
        "/tw/upstreams/app/backends/b",
        format!("{{\"addr\":\"{}\",\"weight\":3}}", b.addr),
        None,
    )
    .await
    .unwrap();
    c.put("/tw/upstreams/app/backends/a", "not an address", None)
        .await
        .unwrap();
    wait_until(Duration::from_secs(3), || async {
        metric(&p, "tideway_etcd_malformed_total").await >= 1.0
    })
    .await;
    assert_eq!(
        p.backends().await,
        [
            ("a".into(), a.addr.to_string(), "active".into(), 5),
            ("b".into(), b.addr.to_string(), "active".into(), 3),
        ]
    );
    // a is as it was: its counters, its open connection, its operator's weight.
    assert_eq!(view(&p, "a").await, before);
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
}

#[tokio::test]
async fn the_saved_etcd_pool_is_served_after_a_restart_while_etcd_is_down() {
    let mut etcd = Etcd::start().await;
    let (a, b) = (backend("a").await, backend("b").await);
    let mut p = start_proxy_full(&etcd.store(), "", "[upstream.app]\nbackends = []").await;
    let mut c = etcd.client().await;
    for (id, be) in [("a", &a), ("b", &b)] {
        c.put(
            format!("/tw/upstreams/app/backends/{id}"),
            be.addr.to_string(),
            None,
        )
        .await
        .unwrap();
    }
    wait_until(Duration::from_secs(3), || async {
        ids(&p).await == ["a", "b"]
    })
    .await;
    // The writer saves the set off the runtime, at most once a second: wait until it has.
    let saved = p.dir.path().join("data").join("etcd-pool.json");
    wait_until(Duration::from_secs(5), || async {
        std::fs::read_to_string(&saved).is_ok_and(|t| t.contains("\"b\""))
    })
    .await;
    etcd.stop();
    p.restart().await;
    wait_until(Duration::from_secs(3), || async {
        ids(&p).await == ["a", "b"]
    })
    .await;
    let client = reqwest::Client::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(backend_id(&client, &p.url("/")).await);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
}
