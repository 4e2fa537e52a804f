//! nginx configuration syntax: directives, arguments, blocks, comments, quotes, and `include`
//! (with globs, relative to the main file's directory). The result is a tree of
//! [`Directive`]s, each knowing its file and line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub file: Arc<PathBuf>,
    pub line: usize,
}

impl Directive {
    /// `file:line`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// Why an nginx config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{col}: {msg}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        col: usize,
        msg: String,
    },
    /// What the config asks cannot be done as nginx would (each with its file:line).
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Semi,
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
    col: usize,
    file: &'a Path,
}

impl<'a> Lexer<'a> {
    fn err(&self, msg: impl Into<String>) -> NginxError {
        NginxError::Syntax {
            file: self.file.to_path_buf(),
            line: self.line,
            col: self.col,
            msg: msg.into(),
        }
    }

    fn bump(&mut self) -> Option<u8> {
        let c = *self.text.get(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    /// Next token with the line and column it starts at.
    fn next(&mut self) -> Result<Option<(Tok, usize, usize)>, NginxError> {
        loop {
            match self.peek() {
                None => return Ok(None),
                Some(c) if c.is_ascii_whitespace() => {
                    self.bump();
                }
                Some(b'#') => {
                    while let Some(c) = self.bump() {
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                Some(_) => break,
            }
        }
        let (line, col) = (self.line, self.col);
        let c = self.peek().expect("checked above");
        let tok = match c {
            b'{' => {
                self.bump();
                Tok::Open
            }
            b'}' => {
                self.bump();
                Tok::Close
            }
            b';' => {
                self.bump();
                Tok::Semi
            }
            b'"' | b'\'' => {
                self.bump();
                let mut out = Vec::new();
                loop {
                    match self.bump() {
                        None => return Err(self.err("unterminated quoted string")),
                        Some(b'\\') => match self.bump() {
                            Some(e) => unescape(&mut out, e),
                            None => return Err(self.err("unterminated quoted string")),
                        },
                        Some(q) if q == c => break,
                        Some(o) => out.push(o),
                    }
                }
                Tok::Word(String::from_utf8_lossy(&out).into_owned())
            }
            _ => {
                let mut out = Vec::new();
                let mut depth = 0usize;
                while let Some(c) = self.peek() {
                    // `${var}` may contain braces; plain braces end a word.
                    if c == b'{' && out.last() == Some(&b'$') {
                        depth += 1;
                    } else if c == b'}' && depth > 0 {
                        depth -= 1;
                    } else if c.is_ascii_whitespace() || c == b';' || c == b'{' || c == b'}' {
                        break;
                    }
                    if c == b'\\' {
                        self.bump();
                        if let Some(e) = self.bump() {
                            unescape(&mut out, e);
                        }
                        continue;
                    }
                    out.push(c);
                    self.bump();
                }
                Tok::Word(String::from_utf8_lossy(&out).into_owned())
            }
        };
        Ok(Some((tok, line, col)))
    }
}

/// nginx's escapes (`ngx_conf_read_token`): `\"`, `\'` and `\\` stand for the character,
/// `\t`, `\r` and `\n` for tab, CR and LF; any other backslash is kept (`\.` in a regex).
fn unescape(out: &mut Vec<u8>, e: u8) {
    match e {
        b'"' | b'\'' | b'\\' => out.push(e),
        b't' => out.push(b'\t'),
        b'r' => out.push(b'\r'),
        b'n' => out.push(b'\n'),
        _ => out.extend_from_slice(&[b'\\', e]),
    }
}

/// Parse `text` (the contents of `file`); `include` paths resolve against `base`.
pub fn parse_text(
    text: &str,
    file: &Path,
    base: &Path,
    depth: usize,
) -> Result<Vec<Directive>, NginxError> {
    let mut lx = Lexer {
        text: text.as_bytes(),
        pos: 0,
        line: 1,
        col: 1,
        file,
    };
    let file_arc = Arc::new(file.to_path_buf());
    let (items, closed) = parse_block(&mut lx, &file_arc, base, depth)?;
    if closed {
        return Err(lx.err("unexpected \"}\""));
    }
    Ok(items)
}

/// Read and parse a file.
pub fn parse_file(path: &Path) -> Result<Vec<Directive>, NginxError> {
    let text = std::fs::read_to_string(path).map_err(|source| NginxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_text(&text, path, &base, 0)
}

/// Most nested includes followed (a loop guard).
pub const MAX_INCLUDE_DEPTH: usize = 16;

fn parse_block(
    lx: &mut Lexer<'_>,
    file: &Arc<PathBuf>,
    base: &Path,
    depth: usize,
) -> Result<(Vec<Directive>, bool), NginxError> {
    let mut out = Vec::new();
    loop {
        let Some((tok, line, col)) = lx.next()? else {
            return Ok((out, false));
        };
        let name = match tok {
            Tok::Close => return Ok((out, true)),
            Tok::Word(w) => w,
            Tok::Open | Tok::Semi => {
                return Err(NginxError::Syntax {
                    file: file.to_path_buf(),
                    line,
                    col,
                    msg: format!(
                        "unexpected {:?}; expected a directive name",
                        if tok == Tok::Open { "{" } else { ";" }
                    ),
                })
            }
        };
        let mut args = Vec::new();
        let block = loop {
            match lx.next()? {
                None => {
                    return Err(lx.err(format!(
                        "unexpected end of file; directive \"{name}\" needs \";\" or \"{{\""
                    )))
                }
                Some((Tok::Word(w), _, _)) => args.push(w),
                Some((Tok::Semi, _, _)) => break None,
                Some((Tok::Open, _, _)) => {
                    let (inner, closed) = parse_block(lx, file, base, depth)?;
                    if !closed {
                        return Err(lx.err(format!(
                            "unexpected end of file; \"{name}\" block is not closed"
                        )));
                    }
                    break Some(inner);
                }
                Some((Tok::Close, l, c)) => {
                    return Err(NginxError::Syntax {
                        file: file.to_path_buf(),
                        line: l,
                        col: c,
                        msg: format!("unexpected \"}}\"; directive \"{name}\" needs \";\""),
                    })
                }
            }
        };
        if name == "include" && block.is_none() {
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(NginxError::Syntax {
                    file: file.to_path_buf(),
                    line,
                    col,
                    msg: "includes nested too deeply (a loop?)".into(),
                });
            }
            for pattern in &args {
                for path in expand(base, pattern).map_err(|msg| NginxError::Syntax {
                    file: file.to_path_buf(),
                    line,
                    col,
                    msg,
                })? {
                    let text = std::fs::read_to_string(&path).map_err(|source| NginxError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    out.extend(parse_text(&text, &path, base, depth + 1)?);
                }
            }
            continue;
        }
        out.push(Directive {
            name,
            args,
            block,
            file: file.clone(),
            line,
        });
    }
}

/// Files an `include` names: a path, or a glob in its last component; sorted.
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let text = full.to_string_lossy().into_owned();
    if !text.contains(['*', '?', '[']) {
        return Ok(vec![full]);
    }
    let mut files: Vec<PathBuf> = glob::glob(&text)
        .map_err(|e| format!("invalid include pattern {pattern:?}: {e}"))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Directive>, NginxError> {
        parse_text(text, Path::new("t.conf"), Path::new("."), 0)
    }

    #[test]
    fn directives_blocks_comments_and_quotes() {
        let d = parse("# c\nhttp {\n  upstream u { server 1.2.3.4:80 weight=2; } # tail\n  map $a $b { default '' ; }\n  add_header X \"a;b\";\n}\n").unwrap();
        assert_eq!(d.len(), 1);
        let http = d[0].block.as_ref().unwrap();
        assert_eq!(http[0].name, "upstream");
        assert_eq!(http[0].args, ["u"]);
        assert_eq!(http[0].line, 3);
        assert_eq!(
            http[0].block.as_ref().unwrap()[0].args,
            ["1.2.3.4:80", "weight=2"]
        );
        assert_eq!(http[1].block.as_ref().unwrap()[0].args, [""]);
        assert_eq!(http[2].args, ["X", "a;b"]);
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = parse("http {\n  upstream u {\n    server 1.2.3.4\n  }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:4:3: unexpected \"}\"; directive \"server\" needs \";\""
        );
        let e = parse("http {\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.conf:2:1: unexpected end of file"),
            "{e}"
        );
        let e = parse("a \"open\n").unwrap_err();
        assert!(e.to_string().contains("unterminated quoted string"), "{e}");
        let e = parse("}\n").unwrap_err();
        assert!(e.to_string().contains("unexpected"), "{e}");
    }

    #[test]
    fn includes_expand_globs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/b.conf"),
            "upstream b { server 2.2.2.2:1; }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/a.conf"),
            "upstream a { server 1.1.1.1:1; }\n",
        )
        .unwrap();
        let main = dir.path().join("nginx.conf");
        std::fs::write(&main, "http {\n  include conf.d/*.conf;\n}\n").unwrap();
        let d = parse_file(&main).unwrap();
        let http = d[0].block.as_ref().unwrap();
        let names: Vec<&str> = http.iter().map(|d| d.args[0].as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(http[0].file.ends_with("conf.d/a.conf"));
    }
}
