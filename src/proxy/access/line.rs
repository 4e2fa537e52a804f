//! How an access line is written: nginx's `combined` format for text, one JSON object for
//! JSON, and nginx's `$time_local`.

use crate::config::date::{civil, MONTHS};
use std::time::SystemTime;

/// nginx's `$time_local` (`06/Dec/2026:20:10:00 +0000`), in UTC: tideway keeps no time zone.
pub fn time_local(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// nginx's `-` for an empty field.
pub fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// What a `combined` line shows.
pub struct Combined<'a> {
    pub client: &'a str,
    pub method: &'a str,
    pub target: &'a str,
    pub version: &'a str,
    pub status: u16,
    pub body_bytes_sent: u64,
    pub referer: &'a str,
    pub user_agent: &'a str,
}

impl Combined<'_> {
    /// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    /// "$http_referer" "$http_user_agent"`, exactly. The fields come escaped as nginx escapes
    /// them (no `"` but as `\x22`). A request line the parser could not read whole shows what
    /// it read.
    pub fn line(&self, now: SystemTime) -> String {
        let request = [self.method, self.target, self.version]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\"",
            self.client,
            time_local(now),
            request,
            self.status,
            self.body_bytes_sent,
            dash(self.referer),
            dash(self.user_agent),
        )
    }
}

/// Seconds with millisecond precision, as a JSON number (nginx's `$request_time`).
pub fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_local_is_nginx_s() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_588_400 + 3723);
        assert_eq!(time_local(t), "06/Dec/2026:21:22:03 +0000");
        assert_eq!(
            time_local(SystemTime::UNIX_EPOCH),
            "01/Jan/1970:00:00:00 +0000"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(time_local(leap), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn a_combined_line_is_exactly_nginx_s() {
        let c = Combined {
            client: "10.0.0.7",
            method: "GET",
            target: "/a?b=\\x22c\\x22",
            version: "HTTP/1.1",
            status: 200,
            body_bytes_sent: 12,
            referer: "",
            user_agent: "curl/8",
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(
            c.line(t),
            "10.0.0.7 - - [29/Feb/2000:00:00:00 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 12 \"-\" \"curl/8\""
        );
        assert_eq!(seconds(Duration::from_micros(1_234_567)), 1.235);
    }
}
