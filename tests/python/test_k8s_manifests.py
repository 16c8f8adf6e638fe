"""The Kubernetes manifests in deploy/k8s/ (and the Slurm scripts in
deploy/slurm/) against the Kubernetes API schema and against the binary.

- Every object in every manifest, and every object the kustomizations render
  (the base and each overlay), validates strictly (unknown fields rejected)
  with ``kubernetes-validate`` against the schema of a current Kubernetes
  release (the newest the installed package knows; IMGNORM_K8S_VERSION picks
  another).
- The kustomizations render with a small renderer here (resources, namespace,
  JSON 6902 patches: what deploy/k8s uses); where ``kubectl kustomize`` is
  installed, its output must be the same objects.
- Every flag in the containers' args and in the sbatch scripts exists in
  ``imgnorm <command> --help``, every environment variable is documented
  there or feeds a ``$(VAR)`` in the args, every absolute path in the args is
  under a mounted volume, and the wiring holds: probe ports, Service ports,
  the master's state on its own ReadWriteOnce claim, the workers' memory
  budget from their limit, the HPA's bounds and metric, the adapter's rule.
- ``master --health-listen`` answers the health check the kubelet's grpc
  probe makes, in plain text beside a TLS master.

    IMGNORM_BIN=target/debug/imgnorm python3 -m pytest -q tests/python/test_k8s_manifests.py
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SLURM = ROOT / "deploy" / "slurm"
KUSTOMIZATIONS = [K8S, K8S / "base", K8S / "overlays" / "autoscaled", K8S / "overlays" / "stream"]
K8S_VERSION = os.environ.get("IMGNORM_K8S_VERSION") or kubernetes_validate.latest_version()
# Kinds that have no namespace.
CLUSTER_KINDS = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
BIN = (shutil.which(BIN_ENV) or BIN_ENV) if BIN_ENV else ""
needs_bin = pytest.mark.skipif(
    not BIN, reason="IMGNORM_BIN is not set: build imgnorm and run with IMGNORM_BIN=path/to/imgnorm"
)


def load_all(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def manifest_files() -> list[Path]:
    """Kubernetes objects (kustomizations and the adapter's non-k8s files aside)."""
    return sorted(
        p
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and "adapter" not in p.relative_to(K8S).parts
    )


# --- A small kustomize: resources, namespace, JSON 6902 patches ----------------


def pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_json_patch(doc: dict, ops: list[dict]) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = pointer(op["path"])
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        kind = op["op"]
        if isinstance(node, list):
            idx = len(node) if last == "-" else int(last)
            if kind == "add":
                node.insert(idx, op["value"])
            elif kind == "remove":
                del node[idx]
            elif kind == "replace":
                node[idx] = op["value"]
            elif kind == "test":
                assert node[idx] == op["value"], f"patch test failed at {op['path']}"
            else:
                raise AssertionError(f"unsupported patch op {kind}")
        else:
            if kind in ("add", "replace"):
                if kind == "replace":
                    assert last in node, f"replace of a missing {op['path']}"
                node[last] = op["value"]
            elif kind == "remove":
                del node[last]
            elif kind == "test":
                assert node[last] == op["value"], f"patch test failed at {op['path']}"
            else:
                raise AssertionError(f"unsupported patch op {kind}")
    return doc


def render(root: Path) -> list[dict]:
    k = yaml.safe_load((root / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "resources", "patches"}
    assert set(k) <= known, f"{root}: the renderer here does not know {set(k) - known}"
    docs: list[dict] = []
    for r in k.get("resources", []):
        p = (root / r).resolve()
        docs.extend(render(p) if p.is_dir() else load_all(p))
    for patch in k.get("patches", []):
        t = patch["target"]
        ops = yaml.safe_load(patch["patch"])
        hits = [
            i
            for i, d in enumerate(docs)
            if d["kind"] == t.get("kind", d["kind"]) and d["metadata"]["name"] == t.get("name", d["metadata"]["name"])
        ]
        assert hits, f"{root}: patch target {t} matches nothing"
        for i in hits:
            docs[i] = apply_json_patch(docs[i], ops)
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in CLUSTER_KINDS:
                d["metadata"]["namespace"] = k["namespace"]
    return docs


@lru_cache(maxsize=None)
def rendered(root: Path) -> tuple:
    return tuple(render(root))


def by_key(docs) -> dict:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# --- Schema -----------------------------------------------------------------------


def test_a_current_kubernetes_schema_is_used():
    major, minor = (int(x) for x in K8S_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 33), f"kubernetes-validate only knows {K8S_VERSION}; upgrade it"


@pytest.mark.parametrize("path", manifest_files(), ids=rel)
def test_manifest_validates_against_the_api_schema(path):
    docs = load_all(path)
    assert docs, f"{path} holds no object"
    for d in docs:
        assert d.get("metadata", {}).get("name"), f"{path}: {d.get('kind')} without metadata.name"
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path}: {d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("root", KUSTOMIZATIONS, ids=rel)
def test_kustomization_renders_to_valid_objects(root):
    docs = rendered(root)
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"duplicate objects: {keys}"
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        if d["kind"] not in CLUSTER_KINDS:
            assert d["metadata"].get("namespace") == "imgnorm", d["metadata"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (optional cross-check)")
@pytest.mark.parametrize("root", KUSTOMIZATIONS, ids=rel)
def test_kubectl_kustomize_renders_the_same(root):
    out = subprocess.run(
        ["kubectl", "kustomize", str(root)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    theirs = by_key(d for d in yaml.safe_load_all(out.stdout) if d)
    ours = by_key(rendered(root))
    assert theirs.keys() == ours.keys()
    for key, d in ours.items():
        assert json.dumps(d, sort_keys=True) == json.dumps(theirs[key], sort_keys=True), key


# --- The manifests against the binary ----------------------------------------------------


def all_objects() -> list[tuple[str, dict]]:
    seen = {}
    for root in KUSTOMIZATIONS:
        for d in rendered(root):
            seen[(rel(root), d["kind"], d["metadata"]["name"])] = d
    for d in load_all(K8S / "job.yaml"):
        seen[("job.yaml", d["kind"], d["metadata"]["name"])] = d
    return [(f"{k[0]}:{k[1]}/{k[2]}", d) for k, d in seen.items()]


def containers() -> list[tuple[str, dict, dict]]:
    """(id, container, pod spec) of every workload."""
    out = []
    for name, d in all_objects():
        spec = d.get("spec", {}).get("template", {}).get("spec")
        if spec:
            for c in spec["containers"]:
                out.append((f"{name}:{c['name']}", c, spec))
    return out


@lru_cache(maxsize=None)
def help_text(command: str) -> str:
    args = [BIN, command, "--help"] if command else [BIN, "--help"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r.stdout


def flags_in(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def has_flag(command: str, flag: str) -> bool:
    return re.search(rf"(^|[\s,]){re.escape(flag)}([\s,=<]|$)", help_text(command), re.M) is not None


def arg_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


@needs_bin
@pytest.mark.parametrize("cid,c,spec", containers(), ids=[x[0] for x in containers()])
def test_container_flags_and_environment_exist_in_the_binary(cid, c, spec):
    args = c.get("args", [])
    assert args and not args[0].startswith("-"), f"{cid}: args must start with the subcommand"
    command = args[0]
    for flag in flags_in(args[1:]):
        assert has_flag(command, flag), f"{cid}: `imgnorm {command}` has no {flag}"
    env = {e["name"]: e for e in c.get("env", [])}
    referenced = set(re.findall(r"\$\((\w+)\)", " ".join(args)))
    assert referenced <= env.keys(), f"{cid}: args use undefined {referenced - env.keys()}"
    documented = help_text(command) + help_text("")
    for name in env:
        assert name in referenced or re.search(rf"\b{name}\b", documented), (
            f"{cid}: environment variable {name} is neither in `imgnorm {command} --help` "
            "nor used by the args"
        )
    # Absolute paths in the args are on a mounted volume (but `submit`'s
    # --input/--output, which are paths as the master sees them).
    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    remote = {"--input", "--output"} if command == "submit" else set()
    for prev, a in zip(["", *args], args):
        if a.startswith("/") and prev not in remote:
            assert any(a == m or a.startswith(m.rstrip("/") + "/") for m in mounts), f"{cid}: {a} is not mounted"
    # Probes hit ports the container declares.
    ports = {p["containerPort"] for p in c.get("ports", [])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in c and "grpc" in c[probe]:
            assert c[probe]["grpc"]["port"] in ports, f"{cid}: {probe} port not declared"


@needs_bin
@pytest.mark.parametrize("script", sorted(SLURM.glob("*.sbatch")), ids=lambda p: p.name)
def test_sbatch_scripts_use_flags_the_binary_has(script):
    text = script.read_text().replace("\\\n", " ")
    calls = re.findall(r'"\$IMGNORM" (\w+)([^\n]*)', text)
    assert calls, f"{script} runs no imgnorm command"
    for command, rest in calls:
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            assert has_flag(command, flag), f"{script.name}: `imgnorm {command}` has no {flag}"
    for flag in re.findall(r'--[a-z][a-z0-9-]*', " ".join(re.findall(r"scale\+?=\(([^)]*)\)", text))):
        assert has_flag("master", flag), f"{script.name}: `imgnorm master` has no {flag}"


# --- Wiring -------------------------------------------------------------------------------


def base() -> dict:
    return by_key(rendered(K8S / "base"))


def master_container() -> dict:
    return base()[("Deployment", "imgnorm-master")]["spec"]["template"]["spec"]["containers"][0]


def test_master_state_is_on_its_own_read_write_once_claim():
    objs = base()
    pod = objs[("Deployment", "imgnorm-master")]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    data_dir = arg_value(c["args"], "--data-dir")
    assert data_dir, "the master has no --data-dir: its job state would be lost on restart"
    mount = next(m for m in c["volumeMounts"] if data_dir.startswith(m["mountPath"]))
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = objs[("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"])]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], claim
    workers = objs[("Deployment", "imgnorm-worker")]["spec"]["template"]["spec"]
    shared = {v["persistentVolumeClaim"]["claimName"] for v in workers["volumes"] if "persistentVolumeClaim" in v}
    assert claim["metadata"]["name"] not in shared, "the state claim is shared with the workers"
    assert objs[("Deployment", "imgnorm-master")]["spec"]["strategy"]["type"] == "Recreate"


def test_master_probes_use_the_plain_text_health_listener():
    c = master_container()
    health = arg_value(c["args"], "--health-listen")
    assert health, "no --health-listen: the kubelet's grpc probe cannot speak TLS"
    port = int(health.rsplit(":", 1)[1])
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port, probe
    assert "tcpSocket" not in c["livenessProbe"]


def test_secrets_come_from_mounted_files_not_the_environment():
    for cid, c, spec in containers():
        names = {e["name"] for e in c.get("env", [])}
        assert "IMGNORM_SECRET" not in names, f"{cid}: the secret in the environment"
        if c["args"][0] in ("master", "worker", "submit"):
            f = arg_value(c["args"], "--secret-file")
            assert f, f"{cid}: no --secret-file"


def test_hpa_follows_the_masters_policy_through_the_service():
    objs = by_key(rendered(K8S / "overlays" / "autoscaled"))
    hpa = objs[("HorizontalPodAutoscaler", "imgnorm-worker")]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in objs
    workers = objs[("Deployment", "imgnorm-worker")]
    assert "replicas" not in workers["spec"], "apply -k would reset the HPA's count"
    c = objs[("Deployment", "imgnorm-master")]["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    assert arg_value(args, "--autoscale") == "external"
    assert int(arg_value(args, "--min-workers")) == hpa["spec"]["minReplicas"]
    assert int(arg_value(args, "--max-workers")) == hpa["spec"]["maxReplicas"]
    http_port = int(arg_value(args, "--http").rsplit(":", 1)[1])
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named.get("http") == http_port
    svc = objs[("Service", "imgnorm-master")]
    assert any(p["targetPort"] in ("http", http_port) for p in svc["spec"]["ports"]), svc
    metric = hpa["spec"]["metrics"][0]["external"]
    assert metric["target"] == {"type": "AverageValue", "averageValue": "1"}
    adapter = yaml.safe_load((K8S / "adapter" / "prometheus-adapter-values.yaml").read_text())
    names = [r["name"]["as"] for r in adapter["rules"]["external"]]
    assert metric["metric"]["name"] in names
    # The series the adapter reads is the one the master exports.
    metrics_rs = (ROOT / "crates" / "imgnorm-app" / "src" / "metrics.rs").read_text()
    assert f'"{metric["metric"]["name"]}"' in metrics_rs
    scrape = yaml.safe_load((K8S / "adapter" / "prometheus-scrape.yaml").read_text())
    assert scrape[0]["scheme"] == "https" and scrape[0]["authorization"]["type"] == "Bearer"


def mib(quantity: str) -> int:
    units = {"Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    m = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", quantity)
    assert m, f"memory limit {quantity!r}: use Mi or Gi"
    return int(m[1]) * units[m[2]]


def test_worker_memory_budget_is_derived_from_its_limit():
    for cid, c, spec in containers():
        if c["args"][0] != "worker":
            continue
        budget = arg_value(c["args"], "--memory-budget")
        assert budget, f"{cid}: no --memory-budget: the default (256 + 2048/thread MiB) ignores the limit"
        var = re.fullmatch(r"\$\((\w+)\)", budget)
        assert var, f"{cid}: --memory-budget {budget} is not taken from the limit"
        env = {e["name"]: e for e in c["env"]}
        ref = env[var[1]]["valueFrom"]["resourceFieldRef"]
        assert ref["resource"] == "limits.memory" and ref["divisor"] == "1Mi"
        assert ref.get("containerName", c["name"]) == c["name"]
        threads = int(arg_value(c["args"], "--threads") or 1)
        limit = mib(c["resources"]["limits"]["memory"])
        # The smallest budget the worker accepts (budget::min_mib).
        assert limit >= 128 + 32 * threads + 64, f"{cid}: {limit} MiB is too small for {threads} threads"


def test_stream_overlay_workers_mount_no_data():
    objs = by_key(rendered(K8S / "overlays" / "stream"))
    pod = objs[("Deployment", "imgnorm-worker")]["spec"]["template"]["spec"]
    assert "data" not in {m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert "data" not in {v["name"] for v in pod["volumes"]}
    assert objs[("PersistentVolumeClaim", "imgnorm-data")]["spec"]["accessModes"] == ["ReadWriteOnce"]


# --- The probe's side, for real ------------------------------------------------------------


@needs_bin
def test_health_listen_answers_in_plain_text_beside_a_tls_master(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        health_port = s.getsockname()[1]
    secret = tmp_path / "secret"
    secret.write_text("k8s-test-secret-0123456789\n")
    master = subprocess.Popen(
        [BIN, "master", "--serve", "--listen", "127.0.0.1:0", "--tls-self-signed", str(tmp_path / "tls"),
         "--secret-file", str(secret), "--health-listen", f"127.0.0.1:{health_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{health_port}"
        deadline = time.monotonic() + 30
        ok = None
        while time.monotonic() < deadline:
            ok = subprocess.run([BIN, "health", "--master", url], capture_output=True, text=True, timeout=30)
            if ok.returncode == 0:
                break
            time.sleep(0.2)
        assert ok is not None and ok.returncode == 0, ok and ok.stderr
        r = subprocess.run([BIN, "health", "--master", url, "--service", "imgnorm.v1.Coordinator"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        # Only health there: the coordinator (status) is not served in plain text.
        st = subprocess.run([BIN, "status", "--master", url, "--secret-file", str(secret)],
                            capture_output=True, text=True, timeout=30)
        assert st.returncode != 0
    finally:
        master.terminate()
        try:
            master.wait(timeout=30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
