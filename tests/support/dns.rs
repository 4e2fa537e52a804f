//! A small authoritative DNS server for tests, on a loopback UDP port of its own: it answers
//! A and AAAA queries for the names a test sets, with the TTL the test sets, NXDOMAIN for any
//! other name, and counts the queries it gets. Messages are read and written with
//! hickory-proto; the answers are real DNS over a real socket.

#![allow(dead_code)]

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Zone {
    /// name (lowercase, no trailing dot) -> (addresses, TTL in seconds)
    names: HashMap<String, (Vec<IpAddr>, u32)>,
    /// Queries received, by name.
    queries: HashMap<String, usize>,
}

/// The server; it stops when dropped.
pub struct Dns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Dns {
    /// Serve on 127.0.0.1, a port the kernel picks.
    pub async fn start() -> Dns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let z = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let answer = answer(&z, &query);
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Dns { addr, zone, task }
    }

    /// `name` answers with `addrs` (A and AAAA records), each with `ttl` seconds.
    pub fn set(&self, name: &str, addrs: &[&str], ttl: u32) {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.zone
            .lock()
            .unwrap()
            .names
            .insert(name.to_ascii_lowercase(), (addrs, ttl));
    }

    /// `name` no longer exists (NXDOMAIN).
    pub fn remove(&self, name: &str) {
        self.zone
            .lock()
            .unwrap()
            .names
            .remove(&name.to_ascii_lowercase());
    }

    /// Queries received for `name` so far (A and AAAA each count).
    pub fn queries(&self, name: &str) -> usize {
        self.zone
            .lock()
            .unwrap()
            .queries
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

fn answer(zone: &Mutex<Zone>, query: &Message) -> Message {
    let mut out = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    out.metadata.authoritative = true;
    out.metadata.recursion_desired = query.metadata.recursion_desired;
    out.metadata.recursion_available = true;
    let Some(q) = query.queries.first() else {
        out.metadata.response_code = ResponseCode::FormErr;
        return out;
    };
    out.add_query(q.clone());
    let name = q.name().to_ascii();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut zone = zone.lock().unwrap();
    *zone.queries.entry(name.clone()).or_default() += 1;
    match zone.names.get(&name) {
        None => out.metadata.response_code = ResponseCode::NXDomain,
        Some((addrs, ttl)) => {
            for ip in addrs {
                let data = match (ip, q.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                out.add_answer(Record::from_rdata(q.name().clone(), *ttl, data));
            }
        }
    }
    out
}
