//! Which location of a server answers a path, by nginx's algorithm
//! (`ngx_http_core_find_location`): an exact (`=`) location equal to the path wins at once;
//! otherwise the longest matching prefix is remembered and its nested locations searched
//! the same way; a `^~` prefix, or a nested exact match, ends the search; then the regexes
//! of the level (`~`, `~*`) are tried in the order they were written, and the first match
//! wins (its nested locations are searched too); else the remembered prefix. A path that is
//! a proxying prefix location without its trailing `/` gets a redirect to add it (nginx's
//! `auto_redirect`), ahead of the regexes.

use crate::config::{LocationConfig, PathRule, RouteAction};
use regex::bytes::{Regex, RegexBuilder};
use std::collections::HashMap;

/// What the search found, as indexes into the table's routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Route(usize),
    /// nginx's 301 to the location's path with its trailing slash.
    Redirect(usize),
}

/// The locations of one level (a server, or a location's nested ones).
#[derive(Debug, Default)]
pub struct Level {
    exact: HashMap<Box<[u8]>, usize>,
    /// Prefix locations, longest first.
    prefixes: Vec<Prefix>,
    /// Proxying locations ending in `/`, keyed by their path without it.
    redirects: HashMap<Box<[u8]>, usize>,
    regexes: Vec<(Regex, usize, Level)>,
}

#[derive(Debug)]
struct Prefix {
    path: Box<[u8]>,
    id: usize,
    noregex: bool,
    nested: Level,
}

impl Level {
    /// Build a level from `locations`, numbering each (depth first, in file order) through
    /// `add`, which is given every location and returns its route index.
    pub fn new(
        locations: &[LocationConfig],
        add: &mut impl FnMut(&LocationConfig) -> usize,
    ) -> Result<Level, String> {
        let mut level = Level::default();
        for l in locations {
            let id = add(l);
            let nested = Level::new(&l.nested, add)?;
            let proxies = matches!(l.action, RouteAction::Proxy { .. });
            if let Some(path) = l.rule.path() {
                if proxies && path.len() > 1 && path.ends_with('/') {
                    let key = path.as_bytes()[..path.len() - 1].into();
                    level.redirects.entry(key).or_insert(id);
                }
            }
            match &l.rule {
                PathRule::Exact(p) => {
                    level.exact.entry(p.as_bytes().into()).or_insert(id);
                }
                PathRule::Prefix(p) | PathRule::NoRegex(p) => level.prefixes.push(Prefix {
                    path: p.as_bytes().into(),
                    id,
                    noregex: matches!(l.rule, PathRule::NoRegex(_)),
                    nested,
                }),
                PathRule::Regex { pattern, caseless } => {
                    // Bytes, not characters, as nginx's PCRE matches them: `.` and `[^/]`
                    // match a decoded byte that is not UTF-8 (`%FF`) too.
                    let re = RegexBuilder::new(pattern)
                        .case_insensitive(*caseless)
                        .unicode(false)
                        .build()
                        .map_err(|e| format!("{}: location {}: {e}", l.at, l.rule))?;
                    level.regexes.push((re, id, nested));
                }
            }
        }
        // Stable: of two equal prefixes, the first defined stays first.
        level
            .prefixes
            .sort_by_key(|p| std::cmp::Reverse(p.path.len()));
        Ok(level)
    }

    /// nginx's search of this level for `uri` (a normalized path). `cur` is the location
    /// found so far (the longest prefix); `Some` is a final answer.
    pub fn find(&self, uri: &[u8], cur: &mut Option<usize>) -> Option<Found> {
        if let Some(&id) = self.exact.get(uri) {
            return Some(Found::Route(id));
        }
        let prefix = self.prefixes.iter().find(|p| uri.starts_with(&p.path));
        if prefix.is_none_or(|p| p.path.len() < uri.len()) {
            if let Some(&id) = self.redirects.get(uri) {
                return Some(Found::Redirect(id));
            }
        }
        let mut noregex = false;
        if let Some(p) = prefix {
            *cur = Some(p.id);
            noregex = p.noregex;
            if let Some(found) = p.nested.find(uri, cur) {
                return Some(found);
            }
        }
        if !noregex {
            for (re, id, nested) in &self.regexes {
                if re.is_match(uri) {
                    *cur = Some(*id);
                    let _ = nested.find(uri, cur);
                    return Some(Found::Route(cur.unwrap_or(*id)));
                }
            }
        }
        None
    }

    /// Nothing but one prefix location `/` with nothing nested: every path goes there.
    pub fn only_root(&self) -> Option<usize> {
        match (
            &self.prefixes[..],
            self.exact.is_empty(),
            self.regexes.is_empty(),
        ) {
            ([p], true, true) if &*p.path == b"/" && p.nested.is_empty() => Some(p.id),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty() && self.regexes.is_empty()
    }
}
