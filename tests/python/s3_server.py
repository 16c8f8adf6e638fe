"""A real S3-compatible server for the tests: ``moto_server`` (pip ``moto[server]``)
started on a free port, plus boto3 helpers to fill and read buckets (owns only
this file). Used by ``test_s3.py`` and the container tests in ``tests/docker``.

The server is a separate process; :meth:`MotoServer.stop` kills it, and the
pytest fixtures call it in a ``finally``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ACCESS_KEY = "imgnorm-test"
SECRET_KEY = "imgnorm-test-secret"
REGION = "us-east-1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def moto_command() -> list[str]:
    exe = shutil.which("moto_server")
    if exe:
        return [exe]
    return [sys.executable, "-m", "moto.server"]


class MotoServer:
    """``moto_server`` bound to ``host`` on a free port; ``url`` is what
    clients on the same machine use."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, auth: bool = False):
        """``auth``: moto checks signatures and IAM permissions (after the
        first 3 AWS requests, which :meth:`with_iam_user` uses to create a
        user; the readiness probe asks moto's own API, which does not count)."""
        self.host = host
        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY
        env = dict(os.environ)
        if auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"  # the 3 IAM calls of with_iam_user
        self.port = port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
        self.log = open(os.environ.get("MOTO_LOG", os.devnull), "wb")
        self.proc = subprocess.Popen(
            moto_command() + ["-H", host, "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        probe = "127.0.0.1" if host == "0.0.0.0" else host
        self.url = f"http://{probe}:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).read()
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto_server did not answer within 30 s")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def with_iam_user(self) -> None:
        """On an ``auth`` server: creates a user allowed ``s3:*`` and uses its
        key from now on (the 3 unauthenticated requests moto allows)."""
        import json

        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.url,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
            region_name=REGION,
        )
        iam.create_user(UserName="imgnorm")
        key = iam.create_access_key(UserName="imgnorm")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="imgnorm", PolicyName="s3", PolicyDocument=json.dumps(policy))
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The environment imgnorm reads its S3 settings from."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )


def upload_tree(client, bucket: str, root: Path, prefix: str, plain_names: bool = False) -> list[str]:
    """Uploads every regular file under ``root`` to ``prefix/rel``; returns the
    keys. ``plain_names``: only names of ASCII letters, digits and ``._-/``
    (moto's signature check rejects boto3's requests for other keys)."""
    keys = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            rel = p.relative_to(root).as_posix()
            if plain_names and not all(ch.isascii() and (ch.isalnum() or ch in "._-/") for ch in rel):
                continue
            key = f"{prefix}/{rel}" if prefix else rel
            client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())
            keys.append(key)
    return keys


def download_prefix(client, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix/`` as {relative key: bytes} (paginated).
    Lists the whole bucket and filters here: moto's signature check rejects
    a LIST with a ``prefix`` when it checks signatures at all."""
    out = {}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for obj in page.get("Contents", []):
            if not obj["Key"].startswith(prefix + "/"):
                continue
            rel = obj["Key"][len(prefix) + 1 :]
            out[rel] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
