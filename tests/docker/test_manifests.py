"""Static checks of deploy/: the compose file and the Kubernetes manifests
parse as YAML and say what docs/DOCKER.md and docs/KUBERNETES.md promise.
Needs no Docker and no cluster (tests/python/test_k8s_manifests.py validates
the k8s manifests against the API schema; they are not run on a cluster)."""

import glob

import pytest

from conftest import ROOT

yaml = pytest.importorskip("yaml")


def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


def test_compose_file():
    (c,) = load(ROOT / "deploy" / "compose.yaml")
    m, w = c["services"]["master"], c["services"]["worker"]
    assert m["healthcheck"]["test"][:3] == ["CMD", "/imgnorm", "health"]
    assert w["depends_on"]["master"]["condition"] == "service_healthy"
    assert m["networks"] == w["networks"] == ["imgnorm"]
    assert "/data/input" in m["volumes"][0] and "/data/output" in m["volumes"][1]


def test_k8s_manifests():
    kinds = {}
    for f in sorted(glob.glob(str(ROOT / "deploy" / "k8s" / "**" / "*.yaml"), recursive=True)):
        if "/adapter/" in f:
            continue  # Helm values and a Prometheus snippet, not objects
        for d in load(f):
            kinds.setdefault(d["kind"], []).append(d)
    assert {"Deployment", "Service", "Job", "PersistentVolumeClaim", "Namespace",
            "Kustomization"} <= set(kinds)
    for dep in kinds["Deployment"]:
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["resources"]["requests"] and c["resources"]["limits"], dep["metadata"]["name"]
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    base = ROOT / "deploy" / "k8s" / "base"
    for r in load(base / "kustomization.yaml")[0]["resources"]:
        assert (base / r).is_file(), r
