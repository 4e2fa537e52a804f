//! Short, deterministic one-line summaries of what a client got and what a backend framed, the
//! same function for what happened and for what a case requires (the requirement is rendered
//! through the same code), and the markdown table built from them.
//!
//! Imports the case, client and backend types only.

use super::cases::{Case, Client, Run};
use super::client::{End, Outcome};
use super::workerman::{Recorded, Upgrade};

/// What one client got, e.g. `100 200 open`, `400 closed`, `101 +7B open`.
pub fn answer(outcome: &Outcome, client: &Client) -> String {
    let statuses: Vec<String> = outcome
        .responses
        .iter()
        .map(|r| match (r.status, r.chunked) {
            (0, _) => "garbage".to_string(),
            (s, true) => format!("{s} chunked"),
            (s, false) => s.to_string(),
        })
        .collect();
    let last_final = outcome.responses.iter().rev().find(|r| r.status >= 200);
    let foreign = client.own.is_some_and(|own| {
        last_final.is_none_or(|r| !String::from_utf8_lossy(&r.body).contains(own))
    });
    render_answer(&statuses, outcome.tunnel.len(), outcome.end, foreign)
}

/// What `client` must get from tideway, in the form of [`answer`].
pub fn required_answer(client: &Client) -> String {
    let statuses: Vec<String> = client.statuses.iter().map(u16::to_string).collect();
    render_answer(&statuses, client.tunnel, client.end, false)
}

fn render_answer(statuses: &[String], tunnel: usize, end: End, foreign: bool) -> String {
    let mut out = if statuses.is_empty() {
        "none".to_string()
    } else {
        statuses.join(" ")
    };
    if tunnel > 0 {
        out.push_str(&format!(" +{tunnel}B"));
    }
    out.push_str(match end {
        End::Closed => " closed",
        End::Open => " open",
        End::Stalled => " stalled",
    });
    if foreign {
        out.push_str(" (another request's answer!)");
    }
    out
}

/// Every client's answer, `; ` between clients.
pub fn answers(run: &Run, case: &Case) -> String {
    let all: Vec<String> = run
        .outcomes
        .iter()
        .zip(&case.clients)
        .map(|(o, c)| answer(o, c))
        .collect();
    all.join("; ")
}

pub fn required_answers(case: &Case) -> String {
    let all: Vec<String> = case.clients.iter().map(required_answer).collect();
    all.join("; ")
}

/// What a backend framed, e.g. `nothing`, `2 reqs: POST /a cl=53 body=53B, GET /private`.
/// `unframed`: bytes the backend holds that are no request (yet).
pub fn saw(requests: &[Recorded], upgrades: &[Upgrade], unframed: usize) -> String {
    let mut out = match requests.len() {
        0 => "nothing".to_string(),
        1 => "1 req: ".to_string(),
        n => format!("{n} reqs: "),
    };
    let reqs: Vec<String> = requests.iter().map(request).collect();
    out.push_str(&reqs.join(", "));
    for u in upgrades {
        out.push_str(&match u.answered {
            101 => format!(
                "; ws 101: {}B early, {}B after",
                u.early.len(),
                u.after.len()
            ),
            s => format!("; ws refused ({s}): {}B early", u.early.len()),
        });
        if !u.early.is_empty() {
            out.push('!');
        }
    }
    if unframed > 0 {
        out.push_str(&format!("; {unframed}B unframed"));
    }
    out
}

/// What tideway's backend must frame for `case`, in the form of [`saw`].
pub fn required_saw(case: &Case) -> String {
    let reqs: Vec<Recorded> = case.want.iter().map(|w| w.recorded()).collect();
    let ups: Vec<Upgrade> = case
        .ws
        .iter()
        .map(|&(answered, early, after)| Upgrade {
            conn: 0,
            answered,
            early: vec![b'.'; early],
            after: vec![b'.'; after],
        })
        .collect();
    saw(&reqs, &ups, 0)
}

/// One request: method, target, non-1.1 version, framing headers, body size, spoofed
/// X-Real-IP, and whether it is a smuggled `/store` holding the victim's cookie.
pub fn request(r: &Recorded) -> String {
    if r.request_line().split(' ').count() != 3 {
        return format!("{} (garbage)", short(&r.request_line(), 16));
    }
    let mut out = format!("{} {}", short(&r.method(), 16), short(&r.target(), 24));
    if r.version() != "HTTP/1.1" {
        out.push_str(&format!(" {}", short(&r.version(), 12)));
    }
    for (name, key) in [("content-length", "cl"), ("transfer-encoding", "te")] {
        let values = r.header_values(name);
        if !values.is_empty() {
            out.push_str(&format!(" {key}={}", short(&values.join(","), 24)));
        }
    }
    if !r.body().is_empty() {
        out.push_str(&format!(" body={}B", r.body().len()));
    }
    let xri = r.header_values("x-real-ip");
    if xri.iter().any(|v| v != "127.0.0.1") {
        out.push_str(&format!(" xri={}", xri.join(",")));
    }
    if r.target() == "/store" {
        out.push_str(" (smuggled!)");
    }
    if String::from_utf8_lossy(r.body()).contains("VICTIM") {
        out.push_str(" (captured VICTIM!)");
    }
    out
}

/// `s` with control and non-ASCII bytes as `?`, cut to `max` characters.
fn short(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if clean.chars().count() <= max {
        clean
    } else {
        format!("{}…", clean.chars().take(max).collect::<String>())
    }
}

/// One row of the differential table.
pub struct Row {
    pub case: String,
    pub nginx_answer: String,
    pub nginx_saw: String,
    pub tideway_answer: String,
    pub tideway_saw: String,
    pub why: String,
}

/// The markdown table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from(
        "| case | nginx answer | nginx's backend saw | tideway answer | tideway's backend saw \
         | why they differ |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let cells = [
            &r.case,
            &r.nginx_answer,
            &r.nginx_saw,
            &r.tideway_answer,
            &r.tideway_saw,
            &r.why,
        ];
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

pub const TABLE_START: &str = "<!-- differential:start -->";
pub const TABLE_END: &str = "<!-- differential:end -->";

/// `doc` with the text between the markers replaced by `table`; `None` without markers.
pub fn replace_section(doc: &str, table: &str) -> Option<String> {
    let start = doc.find(TABLE_START)? + TABLE_START.len();
    let end = start + doc[start..].find(TABLE_END)?;
    Some(format!("{}\n{table}{}", &doc[..start], &doc[end..]))
}
