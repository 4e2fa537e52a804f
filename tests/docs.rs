//! The README and `docs/` hold together: every relative link points at a file that exists (and,
//! with `#anchor`, at a heading of that file), and every config they show loads.
//!
//! Links: every `[text](target)` outside code blocks and code spans, in README.md and
//! docs/*.md, whose target is not a URL (`scheme:`) is a path relative to the file that holds
//! it; `#anchor` must be the GitHub slug of a heading in the target (lowercased, punctuation
//! but `-` and `_` dropped, spaces made `-`, a repeated heading suffixed `-1`, `-2`, ...).
//!
//! Configs: every ```toml block is a whole tideway config and is loaded with
//! `tideway::config::parse`, and every ```nginx block a whole nginx config, loaded with
//! `tideway::nginx::load`, unless the line before its opening fence is `<!-- fragment -->`:
//! a fragment (a few keys shown out of their config) need only be valid TOML (nginx fragments
//! are not read).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FRAGMENT: &str = "<!-- fragment -->";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md, sorted.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(manifest().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, manifest().join("README.md"));
    docs
}

fn shown(path: &Path) -> String {
    path.strip_prefix(manifest())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Lines outside fenced code blocks, with their 1-based numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// `line` without its code spans.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        }
    }
    out
}

/// The targets of the `[text](target)` links in `line`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(end) => {
                let target = after[..end].trim();
                // `[a](b "title")`: the target is the first word.
                let target = target.split_whitespace().next().unwrap_or("");
                out.push(target.to_string());
                rest = &after[end..];
            }
            None => break,
        }
    }
    out
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of every heading in `text`, repeated ones suffixed as GitHub does.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let base = slug(heading.trim_start_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// Every broken relative link in `doc`, as "FILE:LINE: why".
fn broken_links(doc: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(doc).unwrap();
    let dir = doc.parent().unwrap();
    let mut broken = Vec::new();
    for (n, line) in prose(&text) {
        for target in link_targets(line) {
            let is_url = target
                .split_once(':')
                .is_some_and(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphabetic()));
            if is_url {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                doc.to_path_buf()
            } else {
                dir.join(file)
            };
            let at = format!("{}:{n}", shown(doc));
            if !path.exists() {
                broken.push(format!("{at}: ({target}): no file {}", shown(&path)));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if path.extension().is_none_or(|e| e != "md") {
                broken.push(format!(
                    "{at}: ({target}): an anchor into a file that is not markdown"
                ));
                continue;
            }
            let headings = anchors(&std::fs::read_to_string(&path).unwrap());
            if !headings.iter().any(|h| h == anchor) {
                broken.push(format!(
                    "{at}: ({target}): no heading #{anchor} in {}",
                    shown(&path)
                ));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_points_at_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    let mut links = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        links += prose(&text)
            .iter()
            .map(|(_, l)| link_targets(l).len())
            .sum::<usize>();
        broken.extend(broken_links(&doc));
    }
    assert!(
        links >= 10,
        "expected the README's map of docs/, found {links} links"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_finds_a_missing_file_and_a_missing_heading() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("other.md"),
        "# Other\n\n## Some `code`, here\n",
    )
    .unwrap();
    let doc = dir.path().join("doc.md");
    let text = "# Doc\n\n[ok](other.md#some-code-here) [ok](#doc) [web](https://example.com/x)\n\
                `[not a link](nowhere.md)`\n\n```\n[in code](nowhere.md)\n```\n\
                [gone](missing.md) [bad](other.md#nope) [self](#nope)\n";
    std::fs::write(&doc, text).unwrap();
    let broken = broken_links(&doc);
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(
        broken[0].contains("doc.md:9: (missing.md): no file"),
        "{broken:#?}"
    );
    assert!(
        broken[1].contains("doc.md:9: (other.md#nope): no heading #nope"),
        "{broken:#?}"
    );
    assert!(
        broken[2].contains("doc.md:9: (#nope): no heading #nope"),
        "{broken:#?}"
    );
}

/// The fenced blocks of `lang` in `text`: (line of the opening fence, is a fragment, body
/// preceded by as many blank lines as the document has before it).
fn blocks(text: &str, lang: &str) -> Vec<(usize, bool, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some(info) = line.strip_prefix("```") {
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_start().starts_with("```"))
                .unwrap_or(lines.len());
            if info.trim() == lang {
                let fragment = i > 0 && lines[i - 1].trim() == FRAGMENT;
                // Blank lines first, so an error's line is the line in the document.
                let body = "\n".repeat(i + 1) + &lines[i + 1..end].join("\n") + "\n";
                out.push((i + 1, fragment, body));
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn every_config_shown_in_the_docs_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let (mut whole, mut fragments) = (0, 0);
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, fragment, body) in blocks(&text, "toml") {
            let at = format!("{}:{line}", shown(&doc));
            if fragment {
                fragments += 1;
                if let Err(e) = body.parse::<toml::Table>() {
                    failures.push(format!("{at}: fragment is not TOML: {e}"));
                }
            } else {
                whole += 1;
                // The error names the document, line and column.
                if let Err(e) = tideway::config::parse(&body, &doc) {
                    failures.push(e.to_string());
                }
            }
        }
        for (line, fragment, body) in blocks(&text, "nginx") {
            if fragment {
                continue;
            }
            whole += 1;
            let path = tmp.path().join(format!("block{line}.conf"));
            std::fs::write(&path, body).unwrap();
            if let Err(e) = tideway::nginx::load(&path) {
                failures.push(format!("{}:{line}: {e}", shown(&doc)));
            }
        }
    }
    assert!(
        whole >= 2,
        "expected the config reference and the autoscale example, found {whole} whole configs \
         ({fragments} fragments)"
    );
    assert!(
        failures.is_empty(),
        "configs in the docs that do not load:\n{}",
        failures.join("\n")
    );
}
