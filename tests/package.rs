//! What the .deb ships besides the proxy, checked from the built binary and the packaging
//! files: `--version` with commit and build date, shell completions and man pages that follow
//! the clap definitions, and a systemd unit and default config that agree with each other and
//! with Cargo.toml's `[package.metadata.deb]`. Installing the .deb itself is
//! `scripts/deb-check.sh` (run by scripts/test.sh).

use clap::CommandFactory;
use std::path::Path;
use std::process::{Command, Output};

const HERE: &str = env!("CARGO_MANIFEST_DIR");

fn tideway(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tideway {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(tideway(args).stdout).unwrap()
}

/// A git command's output in the crate's directory, when it is the top of a checkout.
fn git(args: &[&str]) -> Option<String> {
    let run = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(HERE)
            .env("TZ", "UTC")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let top = run(&["rev-parse", "--show-toplevel"])?;
    let same = Path::new(&top).canonicalize().ok()? == Path::new(HERE).canonicalize().ok()?;
    same.then(|| run(args)).flatten()
}

/// Every subcommand path of the clap definitions: "run", "ctl", "ctl list", ...
fn subcommands() -> Vec<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            let name = format!("{prefix}{}", sub.get_name());
            out.push(name.clone());
            walk(sub, &format!("{name} "), out);
        }
    }
    let mut out = Vec::new();
    walk(&tideway::cli::Cli::command(), "", &mut out);
    out
}

#[test]
fn version_names_the_version_the_commit_and_the_build_date() {
    let line = stdout(&["--version"]);
    let rest = line
        .trim()
        .strip_prefix(&format!("tideway {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("unexpected --version: {line}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("unexpected --version: {line}"));
    let today = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%F"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(date.len(), 10, "{date}");
    assert!(date <= today.trim(), "built {date}, after today {today}");
    if let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) {
        if std::env::var_os("TIDEWAY_COMMIT").is_none() {
            assert_eq!(commit, head, "--version names another commit than HEAD");
        }
        if std::env::var_os("SOURCE_DATE_EPOCH").is_none() {
            let committed = git(&["log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%d"])
                .expect("HEAD's commit date");
            assert!(
                date >= committed.as_str(),
                "built {date}, before HEAD ({committed})"
            );
        }
    }
}

/// What bash completes for the words of `line` (the last one being completed).
fn bash_complete(script: &Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n_tideway tideway '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tideway.bash");
    std::fs::write(&script, tideway(&["completions", "bash"]).stdout).unwrap();
    assert_eq!(bash_complete(&script, "tideway ct"), ["ctl"]);
    assert_eq!(bash_complete(&script, "tideway run --con"), ["--config"]);
    assert_eq!(
        bash_complete(&script, "tideway ctl dr"),
        ["drain"],
        "ctl's own subcommands"
    );
    let top = bash_complete(&script, "tideway ");
    for sub in subcommands().iter().filter(|s| !s.contains(' ')) {
        assert!(top.contains(sub), "`tideway <TAB>` lacks {sub}: {top:?}");
    }
}

#[test]
fn zsh_and_fish_completions_know_every_subcommand() {
    // zsh and fish are not installed here; their scripts must at least name each subcommand
    // (bash's is run above).
    for shell in ["zsh", "fish"] {
        let script = stdout(&["completions", shell]);
        for sub in subcommands() {
            let last = sub.rsplit(' ').next().unwrap();
            assert!(script.contains(last), "{shell} completions lack {sub}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
}

#[test]
fn man_pages_cover_every_subcommand_and_render_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let listed = stdout(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    let mut expected: Vec<String> = subcommands()
        .iter()
        .filter(|s| !s.ends_with("help"))
        .map(|s| format!("tideway-{}.1", s.replace(' ', "-")))
        .collect();
    expected.push("tideway.1".into());
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, expected);
    assert_eq!(listed.lines().count(), expected.len(), "{listed}");

    let main_page = stdout(&["man"]);
    assert_eq!(
        main_page,
        std::fs::read_to_string(dir.path().join("tideway.1")).unwrap()
    );
    assert!(main_page.contains(".SH SUBCOMMANDS"), "{main_page}");
    // Every page renders with groff, warnings on (-ww), and says what its command does.
    for name in &written {
        let page = dir.path().join(name);
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P-cbou"]) // plain text: no overstrike, no SGR
            .arg(&page)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}");
        assert!(
            out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("SYNOPSIS"), "{name}: {text}");
    }
}

/// A `Key=value` of the unit's [Service] section.
fn unit_key<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

#[test]
fn the_unit_the_default_config_and_the_deb_metadata_agree() {
    let unit = std::fs::read_to_string(Path::new(HERE).join("packaging/tideway.service")).unwrap();
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(Path::new(HERE).join("Cargo.toml")).unwrap())
            .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets: Vec<(&str, &str)> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap(), a[1].as_str().unwrap()))
        .collect();
    let installed = |src: &str| {
        let (_, dest) = assets.iter().find(|(s, _)| *s == src).unwrap();
        format!("/{dest}")
    };

    // ExecStart runs the packaged binary on the packaged config; ExecStartPre checks it.
    let config = installed("packaging/tideway.toml");
    let bin = format!("{}tideway", installed("target/release/tideway"));
    assert_eq!(
        unit_key(&unit, "ExecStart"),
        format!("{bin} run --config {config}")
    );
    assert_eq!(
        unit_key(&unit, "ExecStartPre"),
        format!("{bin} check --config {config}")
    );
    assert!(deb["conf-files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c.as_str() == Some(config.as_str())));

    // The packaged config is valid, and its data_dir is the unit's state directory, the one
    // directory ProtectSystem=strict leaves writable.
    tideway(&[
        "check",
        "--config",
        Path::new(HERE)
            .join("packaging/tideway.toml")
            .to_str()
            .unwrap(),
    ]);
    let cfg = tideway::config::load(&Path::new(HERE).join("packaging/tideway.toml")).unwrap();
    let state = format!("/var/lib/{}", unit_key(&unit, "StateDirectory"));
    assert_eq!(cfg.store.data_dir, Path::new(&state));
    assert_eq!(unit_key(&unit, "ReadWritePaths"), state);
    assert_eq!(unit_key(&unit, "WorkingDirectory"), state);
    assert_eq!(unit_key(&unit, "User"), "tideway");
    assert_eq!(unit_key(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
}
