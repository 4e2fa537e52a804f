//! The deployment files in docker/: `scripts/validate-deploy.sh` validates them without a
//! Docker engine or a cluster (hadolint, compose, kustomize, kubernetes-validate, PromQL,
//! `tideway check`, a smoke run of the binary), and every `tideway ...` command line written
//! in them must parse with tideway's own CLI.
//!
//! The script installs its tools (PyPI) into a cache on first use: python3 with venv, and
//! kubectl on PATH, are needed.

use clap::Parser;
use std::path::Path;
use std::process::{Command, Output};
use tideway::cli::{Cli, Command as Sub, CtlCmd};

fn script(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("bash")
        .arg(root.join("scripts/validate-deploy.sh"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("run scripts/validate-deploy.sh")
}

#[test]
fn deployment_files_validate() {
    let out = script(&[env!("CARGO_BIN_EXE_tideway")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "scripts/validate-deploy.sh reported problems (see above)"
    );
    assert!(stdout.contains("deploy validation: "), "no summary line");
}

/// One command line found in docker/, as the script prints it.
struct Found {
    source: String,
    argv: Vec<String>,
}

fn command_lines() -> Vec<Found> {
    let out = script(&["--commands"]);
    assert!(
        out.status.success(),
        "validate-deploy.sh --commands: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
            Found {
                source: v["source"].as_str().expect("source").to_string(),
                argv: v["argv"]
                    .as_array()
                    .expect("argv")
                    .iter()
                    .map(|a| a.as_str().expect("string argument").to_string())
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn every_tideway_command_line_in_docker_files_parses() {
    let found = command_lines();
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in &found {
        println!("{}: {}", f.source, f.argv.join(" "));
        let cli = match Cli::try_parse_from(&f.argv) {
            Ok(cli) => cli,
            Err(e) => {
                problems.push(format!("{}: `{}`: {e}", f.source, f.argv.join(" ")));
                continue;
            }
        };
        match cli.command {
            Sub::Run { config, .. } => {
                seen.insert("run");
                if config.is_none() {
                    problems.push(format!("{}: `run` without --config", f.source));
                }
            }
            Sub::DemoBackend {
                register,
                advertise,
                listen,
                ..
            } => {
                seen.insert("demo-backend");
                // a backend listening on 0.0.0.0 must say which address tideway reaches
                if register.is_some() && listen.starts_with("0.0.0.0") && advertise.is_none() {
                    problems.push(format!(
                        "{}: demo-backend registers {listen} without --advertise",
                        f.source
                    ));
                }
            }
            Sub::Ctl {
                secret_file, cmd, ..
            } => {
                let name = match cmd {
                    CtlCmd::Drain { wait, .. } => {
                        if wait.is_none() {
                            problems.push(format!("{}: ctl drain without --wait", f.source));
                        }
                        "ctl drain"
                    }
                    CtlCmd::Deregister { .. } => "ctl deregister",
                    _ => "ctl (other)",
                };
                seen.insert(name);
                if secret_file.is_none() {
                    problems.push(format!(
                        "{}: ctl with the register token needs --secret-file",
                        f.source
                    ));
                }
            }
            _ => {
                seen.insert("other");
            }
        }
    }
    assert!(
        problems.is_empty(),
        "command lines in docker/ that tideway's CLI refuses:\n{}",
        problems.join("\n")
    );
    for want in ["run", "demo-backend", "ctl drain", "ctl deregister"] {
        assert!(
            seen.contains(want),
            "no `tideway {want}` found in docker/ (extraction broken?); found: {seen:?}"
        );
    }
    assert!(
        found.len() >= 10,
        "only {} command lines found in docker/",
        found.len()
    );
    // the Dockerfile's default, compose's services and the k8s containers and hooks all count
    for source in [
        "docker/Dockerfile",
        "docker/compose.yaml",
        "docker/k8s/tideway-deployment.yaml",
        "docker/k8s/backend-deployment.yaml",
    ] {
        assert!(
            found.iter().any(|f| f.source.starts_with(source)),
            "no command line found in {source}"
        );
    }
}
