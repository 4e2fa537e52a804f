//! What the import did with every directive: read, approximated, of no effect on traffic,
//! ignored, skipped or an error, each with its nginx file:line and why. `tideway check
//! --nginx` prints it; `run --nginx` logs what is not read.
//!
//! The report starts from a walk of the parsed config, each directive classed by
//! [`super::directives`]; what the conversion found (an invalid value, a parameter tideway
//! cannot honour, a location it does not serve) then overrides the class of the directive it
//! names.
//!
//! Imports: `nginx::parse` and `nginx::directives` only.

use super::directives::{self, Kind};
use super::parse::Directive;
use std::fmt;

/// What became of a directive, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// tideway does what nginx does.
    Read,
    /// tideway does something close; the finding says how it differs.
    Approximated,
    /// An nginx process, logging or buffering setting that changes nothing a client or a
    /// backend sees; `--strict` lets it pass.
    NoEffect,
    /// Not applied: traffic may differ from nginx's. `--strict` makes it an error.
    Ignored,
    /// Left out on request (`--skip-unproxied`): a location that nginx serves itself, or a
    /// UDP listen.
    Skipped,
    /// The import fails.
    Error,
}

impl Class {
    /// Every class, in the report's order.
    pub const ALL: [Class; 6] = [
        Class::Read,
        Class::Approximated,
        Class::NoEffect,
        Class::Ignored,
        Class::Skipped,
        Class::Error,
    ];

    /// The heading of its group.
    pub fn title(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Approximated => "approximated",
            Class::NoEffect => "no effect on traffic",
            Class::Ignored => "ignored",
            Class::Skipped => "skipped",
            Class::Error => "errors",
        }
    }
}

/// One directive (or one thing the conversion says about it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// nginx `file:line`.
    pub at: String,
    /// The directive's name; empty when the finding is about no single directive.
    pub name: String,
    pub class: Class,
    /// How it is read, approximated or why not; may be empty for [`Class::Read`].
    pub why: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name.is_empty(), self.why.is_empty()) {
            (true, _) if self.at.is_empty() => write!(f, "{}", self.why),
            (true, _) => write!(f, "{}: {}", self.at, self.why),
            (false, true) => write!(f, "{}: \"{}\"", self.at, self.name),
            (false, false) => {
                let sep = if self.why.starts_with([':', ';', ',']) {
                    ""
                } else {
                    " "
                };
                write!(f, "{}: \"{}\"{sep}{}", self.at, self.name, self.why)
            }
        }
    }
}

impl Finding {
    /// A finding about `d`.
    pub fn of(d: &Directive, class: Class, why: impl Into<String>) -> Finding {
        Finding {
            at: d.at(),
            name: d.name.clone(),
            class,
            why: why.into(),
        }
    }

    /// A conversion message `FILE:LINE: text` as a finding of `class`. The directive it
    /// is about is the one quoted first (`"name" ...`) or the first word.
    pub fn from_message(msg: &str, class: Class) -> Finding {
        let (at, text) = split_at(msg);
        let (name, why) = match text.strip_prefix('"').and_then(|t| t.split_once('"')) {
            Some((name, rest)) if is_name(name) => (name.to_string(), rest.trim().to_string()),
            _ => (String::new(), text.to_string()),
        };
        Finding {
            at: at.to_string(),
            name,
            class,
            why,
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `FILE:LINE: text` -> (`FILE:LINE`, `text`); ("", msg) when it has no such prefix.
fn split_at(msg: &str) -> (&str, &str) {
    let mut from = 0;
    while let Some(i) = msg[from..].find(": ") {
        let head = &msg[..from + i];
        let line = head.rsplit(':').next().unwrap_or_default();
        if head.contains(':') && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) {
            return (head, &msg[from + i + 2..]);
        }
        from += i + 2;
    }
    ("", msg)
}

/// A warning's class: what it says is not applied is ignored, anything else approximated.
pub fn warning_class(msg: &str) -> Class {
    const NOT_APPLIED: [&str; 4] = ["ignored", "not understood", "leaves it out", "not served"];
    if NOT_APPLIED.iter().any(|w| msg.contains(w)) {
        Class::Ignored
    } else {
        Class::Approximated
    }
}

/// Every finding of one import, in file order within each class.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

/// Blocks whose directives the walk classes one by one; any other block is one finding.
const WALKED: [&str; 5] = ["http", "stream", "server", "location", "upstream"];

impl Report {
    /// The walk: every directive of `top` classed by the directive table.
    pub fn walk(top: &[Directive]) -> Report {
        let mut r = Report::default();
        r.visit(top);
        r
    }

    fn visit(&mut self, block: &[Directive]) {
        for d in block {
            let lead = |verb: &str, w: &str| {
                if w.starts_with("is ") || w.starts_with("becomes ") {
                    w.to_string()
                } else {
                    format!("{verb}: {w}")
                }
            };
            let (class, why) = match directives::classify(d) {
                Kind::Read => (Class::Read, String::new()),
                Kind::Approximated(w) => (Class::Approximated, lead("is approximated", w)),
                Kind::NoEffect(w) => (Class::NoEffect, lead("has no effect", w)),
                Kind::Ignored(w) => (Class::Ignored, lead("is ignored", w)),
                // A content directive's location is judged as a whole by the conversion.
                Kind::Content => (
                    Class::NoEffect,
                    lead("has no effect", directives::CONTENT_WHY),
                ),
                Kind::Refused(w) => (Class::Error, w.to_string()),
            };
            self.findings.push(Finding::of(d, class, why));
            if WALKED.contains(&d.name.as_str()) {
                if let Some(inner) = &d.block {
                    self.visit(inner);
                }
            }
        }
    }

    /// Add what the conversion found: it replaces the walk's finding for the same directive
    /// at the same place (the only one there, or the one it names), unless the walk already
    /// knows the directive has no effect and the note merely ignores it.
    pub fn note(&mut self, n: Finding) {
        let here: Vec<usize> = (0..self.findings.len())
            .filter(|&i| self.findings[i].at == n.at && !n.at.is_empty())
            .collect();
        let target = here
            .iter()
            .copied()
            .find(|&i| !n.name.is_empty() && self.findings[i].name == n.name)
            .or(match here[..] {
                [only] if n.name.is_empty() => Some(only),
                _ => None,
            });
        match target {
            // The table's reason why a directive is not used says more than "not understood".
            Some(i)
                if matches!(self.findings[i].class, Class::NoEffect | Class::Ignored)
                    && n.class == Class::Ignored => {}
            Some(i) if self.findings[i].class == Class::Error && n.class < Class::Error => {}
            // A message naming no directive is shown as written.
            Some(i) => self.findings[i] = n,
            None => self.findings.push(n),
        }
    }

    /// `--strict`: every ignored directive becomes an error.
    pub fn strict(&mut self) {
        for f in &mut self.findings {
            if f.class == Class::Ignored {
                f.class = Class::Error;
                f.why = format!("{} (--strict refuses what tideway would ignore)", f.why)
                    .trim_start()
                    .to_string();
            }
        }
    }

    /// The findings of one class.
    pub fn of(&self, class: Class) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.class == class)
    }

    /// Each finding of `class`, rendered.
    pub fn lines(&self, class: Class) -> Vec<String> {
        self.of(class).map(ToString::to_string).collect()
    }

    /// What `run --nginx` warns about: everything neither read nor an error.
    pub fn warnings(&self) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| !matches!(f.class, Class::Read | Class::NoEffect | Class::Error))
            .map(ToString::to_string)
            .collect()
    }

    /// The whole report, grouped by class (empty groups left out).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for class in Class::ALL {
            let lines = self.lines(class);
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("{} ({}):\n", class.title(), lines.len()));
            for l in lines {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_into_place_directive_and_why() {
        let f = Finding::from_message(
            "a/b.conf:12: \"gzip\" is not understood in a server block; ignored",
            Class::Ignored,
        );
        assert_eq!(f.at, "a/b.conf:12");
        assert_eq!(f.name, "gzip");
        assert_eq!(f.why, "is not understood in a server block; ignored");
        assert_eq!(
            f.to_string(),
            "a/b.conf:12: \"gzip\" is not understood in a server block; ignored"
        );
        let f = Finding::from_message(
            "x.conf:3: backup server 1.2.3.4:80 is not allowed",
            Class::Ignored,
        );
        assert_eq!((f.at.as_str(), f.name.as_str()), ("x.conf:3", ""));
        assert_eq!(
            f.to_string(),
            "x.conf:3: backup server 1.2.3.4:80 is not allowed"
        );
        assert_eq!(warning_class("x; ignored"), Class::Ignored);
        assert_eq!(warning_class("becomes p2c"), Class::Approximated);
    }
}
