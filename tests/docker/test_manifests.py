"""Static checks of deploy/: the compose file and the Kubernetes manifests
parse as YAML and say what docs/DOCKER.md and deploy/k8s/README.md promise.
Needs no Docker and no cluster (the k8s manifests are not tested on one)."""

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
    for f in sorted(glob.glob(str(ROOT / "deploy" / "k8s" / "*.yaml"))):
        for d in load(f):
            kinds.setdefault(d["kind"], []).append(d)
    assert {"Deployment", "Service", "Job", "PersistentVolumeClaim", "Namespace",
            "Kustomization"} <= set(kinds)
    for dep in kinds["Deployment"]:
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["resources"]["requests"] and c["resources"]["limits"], dep["metadata"]["name"]
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    res = load(ROOT / "deploy" / "k8s" / "kustomization.yaml")[0]["resources"]
    for r in res:
        assert (ROOT / "deploy" / "k8s" / r).is_file(), r
