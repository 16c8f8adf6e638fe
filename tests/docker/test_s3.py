"""Object storage in containers (owns only this file): a master and two
workers with NO volumes read the input from and write the dataset to an
S3-compatible server (a real ``moto_server`` on the host, bound to all
interfaces on a free port and reached through the Docker network's gateway).
The dataset must be byte-identical to ``imgnorm centralized`` on the host.

The moto server is stopped and the containers and network removed also when
the test fails (``finally`` and the ``cluster`` fixture).
"""

import sys

import pytest

from conftest import ROOT, VOLATILE, files

sys.path.insert(0, str(ROOT / "tests" / "python"))
pytest.importorskip("boto3", reason="boto3 is needed (scripts/py-deps.sh)")
pytest.importorskip("moto", reason="moto[server] is needed (scripts/py-deps.sh)")
from s3_server import MotoServer, download_prefix, upload_tree  # noqa: E402

FAST = ["--heartbeat-interval", "0.5", "--heartbeat-timeout", "2", "--batch-size", "8"]
BUCKET = "imgnorm-docker"


def test_s3_cluster_without_volumes(cluster, dataset):
    server = MotoServer(host="0.0.0.0")
    try:
        c = server.client()
        c.create_bucket(Bucket=BUCKET)
        upload_tree(c, BUCKET, dataset.input, "in")
        env = server.env(endpoint=f"http://{cluster.gateway()}:{server.port}")
        cluster.start("master", "master", "--input", f"s3://{BUCKET}/in",
                      "--output", f"s3://{BUCKET}/out", "--quiet", *FAST, env=env)
        for i in range(2):
            cluster.start(f"w{i}", "worker", "--master", "http://master:50051",
                          "--name", f"w{i}", env=env)
        assert cluster.wait_exit("master", timeout=180) == dataset.code, cluster.logs("master")
        got = download_prefix(c, BUCKET, "out")
        want = {k: p.read_bytes() for k, p in files(dataset.reference).items()
                if k not in VOLATILE}
        have = {k: v for k, v in got.items() if k not in VOLATILE}
        assert sorted(have) == sorted(want)
        diff = [k for k in want if have[k] != want[k]]
        assert not diff, f"{len(diff)} objects differ, e.g. {diff[:5]}"
        assert "stats.json" in got and "provenance.jsonl" in got
    finally:
        server.stop()
