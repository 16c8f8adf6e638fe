"""Object-storage input and output (``s3://``) against a real S3-compatible
server, ``moto_server`` on a free loopback port (owns only this file).

The committed fixtures (valid images of every format plus hostile files) are
uploaded with boto3; ``imgnorm centralized`` on the local folder is the
reference, and every S3 combination (s3->s3, local->s3, s3->local, one thread
or a master with 2 worker processes) must write byte-identical ``.npy``
objects and manifest, and the same dataset statistics. Corrupt objects are
failed rows with the same reasons as local files; an unreachable endpoint or a
missing bucket is a clear error with exit code 2 before any image is read.

Needs boto3 and moto[server] (``scripts/py-deps.sh``); skipped with a message
when ``IMGNORM_BIN`` is unset.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

BIN = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN:
    pytest.skip("IMGNORM_BIN is not set", allow_module_level=True)
pytest.importorskip("boto3", reason="boto3 is needed (scripts/py-deps.sh)")
pytest.importorskip("moto", reason="moto[server] is needed (scripts/py-deps.sh)")

from s3_server import MotoServer, download_prefix, free_port, read_tree, upload_tree  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BUCKET = "imgnorm-test"
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def s3():
    server = MotoServer()
    try:
        c = server.client()
        c.create_bucket(Bucket=BUCKET)
        upload_tree(c, BUCKET, FIXTURES, "in")
        yield server
    finally:
        server.stop()


def imgnorm(args, env_extra=None, timeout=TIMEOUT_S):
    env = dict(os.environ)
    env.pop("AWS_PROFILE", None)
    env.update(env_extra or {})
    return subprocess.run(
        [BIN, *args, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    r = imgnorm(["centralized", "--input", str(FIXTURES), "--output", str(out)])
    assert r.returncode == 3, r.stderr  # the hostile fixtures fail
    return r, read_tree(out)


def dataset_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """Outputs that must be byte-identical across modes: arrays and manifest."""
    return {k: v for k, v in files.items() if k.endswith(".npy") or k == "manifest.jsonl"}


def assert_same_dataset(got: dict[str, bytes], ref: dict[str, bytes]):
    want = dataset_files(ref)
    have = dataset_files(got)
    assert sorted(have) == sorted(want)
    for k in want:
        assert have[k] == want[k], f"{k} differs"
    assert len([k for k in want if k.endswith(".npy")]) >= 20
    a = json.loads(got["stats.json"])["dataset"]
    b = json.loads(ref["stats.json"])["dataset"]
    assert a == b
    assert ".imgnorm-write-check" not in got


def summary(r) -> dict:
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_centralized_s3_to_s3_matches_local(s3, reference):
    ref_run, ref = reference
    r = imgnorm(
        ["centralized", "--input", f"s3://{BUCKET}/in", "--output", f"s3://{BUCKET}/out-central"],
        s3.env(),
    )
    assert r.returncode == 3, r.stderr
    got = download_prefix(s3.client(), BUCKET, "out-central")
    assert_same_dataset(got, ref)
    assert summary(r)["failed"] == summary(ref_run)["failed"] > 0


def test_run_two_workers_s3_to_s3_matches_centralized(s3, reference):
    _, ref = reference
    r = imgnorm(
        [
            "run", "--workers", "2", "--batch-size", "4",
            "--input", f"s3://{BUCKET}/in", "--output", f"s3://{BUCKET}/out-run",
        ],
        s3.env(),
    )
    assert r.returncode == 3, r.stderr
    got = download_prefix(s3.client(), BUCKET, "out-run")
    assert_same_dataset(got, ref)
    # Both worker processes took part, and provenance went to the bucket too.
    prov = [json.loads(l) for l in got["provenance.jsonl"].decode().splitlines()]
    assert len({p["worker_id"] for p in prov}) == 2
    assert json.loads(got["stats.json"])["mode"] == "distributed"


def test_local_input_to_s3_output(s3, reference):
    _, ref = reference
    r = imgnorm(
        ["centralized", "--input", str(FIXTURES), "--output", f"s3://{BUCKET}/out-l2s"],
        s3.env(),
    )
    assert r.returncode == 3, r.stderr
    assert_same_dataset(download_prefix(s3.client(), BUCKET, "out-l2s"), ref)


def test_s3_input_to_local_output_distributed(s3, reference, tmp_path):
    _, ref = reference
    out = tmp_path / "out"
    r = imgnorm(
        ["run", "--workers", "2", "--input", f"s3://{BUCKET}/in", "--output", str(out)],
        s3.env(),
    )
    assert r.returncode == 3, r.stderr
    assert_same_dataset(read_tree(out), ref)
    # No temporary files left behind.
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_corrupt_objects_are_failed_rows_with_reasons(s3):
    rows = {}
    for line in download_prefix(s3.client(), BUCKET, "out-central")["manifest.jsonl"].decode().splitlines():
        row = json.loads(line)
        rows[row["path"]] = row
    for name in ["truncated.jpg", "random.jpg", "empty.jpg", "text.png", "truncated.png", "bomb.png"]:
        row = rows[f"hostile/{name}"]
        assert row["status"] == "failed", row
        assert row["reason"], row
    assert rows["hostile/notes.txt"]["status"] == "skipped"


def test_listing_paginates_in_sorted_order(s3, tmp_path):
    # More keys than one LIST page (1000) holds, uploaded out of order.
    c = s3.client()
    names = [f"d{(i * 7919) % 1100:04d}.txt" for i in range(1100)]
    for n in names:
        c.put_object(Bucket=BUCKET, Key=f"many/{n}", Body=b"not an image")
    out = tmp_path / "out"
    r = imgnorm(["centralized", "--input", f"s3://{BUCKET}/many", "--output", str(out)], s3.env())
    assert r.returncode == 0, r.stderr
    paths = [json.loads(l)["path"] for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert paths == sorted(set(names))
    assert summary(r)["skipped"] == 1100


def test_unreachable_endpoint_is_a_clear_error(s3, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    t = time.monotonic()
    r = imgnorm(
        ["run", "--workers", "1", "--input", f"s3://{BUCKET}/in", "--output", str(tmp_path / "o")],
        s3.env(endpoint=dead),
    )
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "cannot list s3://imgnorm-test/in" in r.stderr, r.stderr
    assert "127.0.0.1" in r.stderr, r.stderr
    assert time.monotonic() - t < 90


def test_missing_bucket_and_empty_prefix_are_clear_errors(s3, tmp_path):
    r = imgnorm(
        ["centralized", "--input", str(FIXTURES), "--output", "s3://no-such-bucket/out"],
        s3.env(),
    )
    assert r.returncode == 2, r.stderr
    assert "s3://no-such-bucket/out is not writable" in r.stderr, r.stderr
    r = imgnorm(
        ["centralized", "--input", f"s3://{BUCKET}/nothing-here", "--output", str(tmp_path / "o")],
        s3.env(),
    )
    assert r.returncode == 2, r.stderr
    assert "is empty or does not exist" in r.stderr, r.stderr


def test_stream_transfer_with_s3_is_refused(s3, tmp_path):
    r = imgnorm(
        [
            "run", "--workers", "1", "--transfer", "stream",
            "--input", f"s3://{BUCKET}/in", "--output", str(tmp_path / "o"),
        ],
        s3.env(),
    )
    assert r.returncode == 2, r.stderr
    assert "--transfer stream needs local" in r.stderr, r.stderr


def test_signed_requests_and_wrong_credentials(tmp_path):
    """A server that checks SigV4 signatures: the right key works end to end
    (s3 -> s3 with 2 workers, two buckets), a wrong secret is a clear error at
    start. moto's own signature check mishandles some requests that AWS
    accepts (a LIST with a ``prefix``, keys with spaces or non-ASCII, from
    boto3 as well), so this test lists a whole bucket with plain names."""
    server = MotoServer(auth=True)
    src, dst = "imgnorm-signed", "imgnorm-signed-out"
    try:
        server.with_iam_user()
        c = server.client()
        c.create_bucket(Bucket=src)
        c.create_bucket(Bucket=dst)
        upload_tree(c, src, FIXTURES / "formats", "", plain_names=True)
        r = imgnorm(
            ["run", "--workers", "2", "--input", f"s3://{src}", "--output", f"s3://{dst}/out"],
            server.env(),
        )
        assert r.returncode == 0, r.stderr
        assert summary(r)["ok"] >= 20
        got = download_prefix(c, dst, "out")
        assert len([k for k in got if k.endswith(".npy")]) == summary(r)["ok"]
        wrong = dict(server.env(), AWS_SECRET_ACCESS_KEY="not-the-secret")
        t = time.monotonic()
        r = imgnorm(
            ["run", "--workers", "1", "--input", f"s3://{src}", "--output", f"s3://{dst}/o2"],
            wrong,
        )
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert f"s3://{dst}/o2 is not writable" in r.stderr, r.stderr
        assert "403" in r.stderr and "SignatureDoesNotMatch" in r.stderr, r.stderr
        assert time.monotonic() - t < 60
        assert download_prefix(c, dst, "o2") == {}
    finally:
        server.stop()
