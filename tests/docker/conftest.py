"""Fixtures for the container tests: the Docker gate, the image, a dataset
with its centralized reference, and a `Cluster` helper that runs a master and
workers as containers on a private network and always removes them.

Everything these tests create carries the label `imgnorm.test=1` and a name
starting with `imgnormt`, so leftovers of a crashed run are removed at the
start of the next one.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = "x86_64-unknown-linux-gnu"
IMAGE = os.environ.get("IMGNORM_IMAGE", "imgnorm") + ":latest"
LABEL = "imgnorm.test=1"
PREFIX = "imgnormt"
# Files that legitimately differ between runs (timings, which worker did what).
VOLATILE = {"stats.json", "provenance.jsonl"}
# The `Cluster` tests stage faults, not attacks: their masters serve plain
# gRPC on the private test network, which off loopback takes --insecure, and
# their workers and host clients say so too. test_security.py and the compose
# test run with TLS and the shared secret.
INSECURE_MASTER = ["--listen", "0.0.0.0:50051", "--insecure"]


def _loud(msg):
    bar = "!" * 78
    sys.stderr.write(f"\n{bar}\n{msg}\n{bar}\n")


def docker_available():
    if shutil.which("docker") is None:
        return False, "the docker CLI is not installed"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"the docker daemon does not answer: {r.stderr.strip()}"
    return True, r.stdout.strip()


def compose_cmd():
    """`docker compose` (v2 plugin) when present, else `docker-compose` (1.x)."""
    r = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if r.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def run(cmd, check=True, timeout=120, **kw):
    cmd = [str(c) for c in cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(
            f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n"
            f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def docker(*args, check=True, timeout=120):
    return run(["docker", *map(str, args)], check=check, timeout=timeout)


def remove_leftovers():
    """Removes containers and networks of earlier (crashed) runs."""
    ids = set()
    for f in (f"label={LABEL}", f"name={PREFIX}"):
        ids |= set(docker("ps", "-aq", "--filter", f, check=False).stdout.split())
    if ids:
        docker("rm", "-f", "-v", *sorted(ids), check=False)
    nets = set()
    for f in (f"label={LABEL}", f"name={PREFIX}"):
        nets |= set(docker("network", "ls", "-q", "--filter", f, check=False).stdout.split())
    for n in sorted(nets):
        docker("network", "rm", n, check=False)


def pytest_report_header(config):
    if os.environ.get("IMGNORM_SKIP_DOCKER") == "1":
        return ["!!!!! IMGNORM_SKIP_DOCKER=1: the container tests in tests/docker are SKIPPED !!!!!"]
    ok, why = docker_available()
    if not ok:
        return [f"!!!!! Docker unavailable ({why}): container tests will be SKIPPED "
                "(set IMGNORM_REQUIRE_DOCKER=1 to fail instead) !!!!!"]
    return [f"docker {why}; compose: {' '.join(compose_cmd() or ['none'])}"]


@pytest.fixture(scope="session")
def docker_ok():
    if os.environ.get("IMGNORM_SKIP_DOCKER") == "1":
        _loud("IMGNORM_SKIP_DOCKER=1: SKIPPING ALL CONTAINER TESTS (tests/docker)")
        pytest.skip("IMGNORM_SKIP_DOCKER=1")
    ok, why = docker_available()
    if not ok:
        if os.environ.get("IMGNORM_REQUIRE_DOCKER") == "1":
            pytest.fail(f"IMGNORM_REQUIRE_DOCKER=1 but {why}")
        _loud(f"DOCKER NOT AVAILABLE ({why}): SKIPPING ALL CONTAINER TESTS")
        pytest.skip(why)
    remove_leftovers()
    yield
    remove_leftovers()


@pytest.fixture(scope="session")
def image(docker_ok):
    """Builds imgnorm:latest once per session (warm: a relink and a COPY)."""
    t = time.monotonic()
    run([str(ROOT / "scripts" / "build-image.sh")], timeout=1800, cwd=ROOT)
    sys.stderr.write(f"image built in {time.monotonic() - t:.1f}s\n")
    return IMAGE


@pytest.fixture(scope="session")
def host_bin(image):
    """The same static binary as in the image, run on the host."""
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    b = Path(target) / TARGET / "release" / "imgnorm"
    assert b.is_file(), b
    return b


class Dataset:
    def __init__(self, input, reference, code, count):
        self.input = input
        self.reference = reference
        self.code = code
        self.count = count


@pytest.fixture(scope="session")
def dataset(host_bin, tmp_path_factory):
    """A mixed dataset and its `imgnorm centralized` output (the reference)."""
    base = tmp_path_factory.mktemp("data")
    inp, ref = base / "input", base / "reference"
    count = int(os.environ.get("IMGNORM_DOCKER_IMAGES", "240"))
    run([host_bin, "gen", "--out", inp, "--count", count, "--format", "mixed",
         "--size", "64x48"])
    r = run([host_bin, "centralized", "--input", inp, "--output", ref, "--quiet"],
            check=False)
    assert r.returncode in (0, 3), r.stderr
    for p in [inp, *inp.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    base.chmod(0o755)
    return Dataset(inp, ref, r.returncode, count)


def files(d):
    return {str(p.relative_to(d)): p for p in sorted(Path(d).rglob("*")) if p.is_file()}


def assert_same_output(out, ref):
    """Byte-identical to the reference, except the volatile files."""
    a = {k: v for k, v in files(out).items() if k not in VOLATILE}
    b = {k: v for k, v in files(ref).items() if k not in VOLATILE}
    assert sorted(a) == sorted(b), (
        f"missing: {sorted(set(b) - set(a))[:10]} extra: {sorted(set(a) - set(b))[:10]}")
    diff = [k for k in a if a[k].read_bytes() != b[k].read_bytes()]
    assert not diff, f"{len(diff)} files differ, e.g. {diff[:5]}"


def assert_each_image_once(out, count):
    rows = [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]
    paths = [r["path"] for r in rows]
    assert len(paths) == count, (len(paths), count)
    assert len(set(paths)) == count, "duplicate rows in manifest.jsonl"
    prov = Path(out) / "provenance.jsonl"
    if prov.exists():
        credited = [json.loads(line)["path"] for line in prov.read_text().splitlines()]
        assert len(credited) == len(set(credited)), "an image credited twice in provenance.jsonl"
        assert set(credited) <= set(paths)


class Cluster:
    """Containers on one private network; `close()` removes all of them."""

    def __init__(self, image, host_bin):
        self.image = image
        self.host_bin = host_bin
        self.id = PREFIX + uuid.uuid4().hex[:8]
        self.net = f"{self.id}-net"
        self.containers = []
        docker("network", "create", "--label", LABEL, self.net)

    def name(self, role):
        return f"{self.id}-{role}"

    def start(self, role, *args, volumes=(), user=None, env=None, insecure=True):
        """`docker run` of the image with `args`; with `insecure`, a master
        listens on the network in plain text and a worker accepts that."""
        args = list(args)
        if insecure and args[:1] == ["master"]:
            args = ["master", *INSECURE_MASTER, *args[1:]]
        elif insecure and args[:1] == ["worker"]:
            args = ["worker", "--insecure", *args[1:]]
        name = self.name(role)
        cmd = ["run", "-d", "--name", name, "--hostname", role, "--label", LABEL,
               "--network", self.net, "--network-alias", role]
        for v in volumes:
            cmd += ["-v", v]
        for k, v in (env or {}).items():
            cmd += ["-e", f"{k}={v}"]
        if user:
            cmd += ["--user", user]
        self.containers.append(name)
        docker(*cmd, self.image, *args)
        return name

    def ip(self, role):
        fmt = "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % self.net
        return docker("inspect", "-f", fmt, self.name(role)).stdout.strip()

    def gateway(self):
        """The host's address on this network (where host services are reached)."""
        fmt = "{{(index .IPAM.Config 0).Gateway}}"
        return docker("network", "inspect", "-f", fmt, self.net).stdout.strip()

    def url(self, role="master"):
        """The master's URL as the host sees it (container IPs are routable)."""
        return f"http://{self.ip(role)}:50051"

    def status(self, url):
        r = run([self.host_bin, "status", "--json", "--master", url, "--insecure"],
                check=False, timeout=20)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def wait_status(self, url, pred, timeout=60, what="condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status(url)
            if last is not None and pred(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last status: {last}")

    def wait_exit(self, role, timeout=120):
        r = docker("wait", self.name(role), timeout=timeout)
        return int(r.stdout.strip())

    def logs(self, role):
        r = docker("logs", "--tail", "60", self.name(role), check=False)
        return r.stdout + r.stderr

    def close(self):
        for c in self.containers:
            docker("rm", "-f", "-v", c, check=False)
        docker("network", "rm", self.net, check=False)


@pytest.fixture
def cluster(image, host_bin, request):
    c = Cluster(image, host_bin)
    try:
        yield c
    finally:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            for role in c.containers:
                sys.stderr.write(f"--- logs of {role} ---\n")
                sys.stderr.write(docker("logs", "--tail", "40", role, check=False).stderr)
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def out_dir(tmp_path):
    """An output folder the container user (uid 10001) can write."""
    tmp_path.chmod(0o755)
    out = tmp_path / "output"
    out.mkdir()
    out.chmod(0o777)
    return out
