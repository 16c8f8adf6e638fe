"""Transport security in containers: the compose set-up of a serving master
(compose.yaml + compose.serve.yaml) runs gRPC over TLS with the certificate
the master generates into the shared `tls` volume, and requires the shared
secret. A job submitted inside the master container must give the same
dataset as `imgnorm centralized`; worker containers with a wrong secret, with
none, or in plain text are refused and exit with an error saying why; the
secret never appears in the logs. (test_cluster.py's compose test runs the
one-job compose.yaml with TLS and the secret as well.)
"""

import os

from conftest import ROOT, assert_each_image_once, assert_same_output, compose_cmd, run

CA = "/data/tls/cert.pem"


def test_compose_serve_over_tls_refuses_wrong_or_missing_secret(image, dataset, out_dir):
    compose = compose_cmd()
    assert compose is not None, "neither `docker compose` nor `docker-compose` is installed"
    project = "imgnormt" + os.urandom(4).hex()
    secret = "docker-test-" + os.urandom(8).hex()
    env = dict(os.environ, IMGNORM_INPUT=str(dataset.input), IMGNORM_OUTPUT=str(out_dir),
               IMGNORM_BATCH="8", COMPOSE_PROJECT_NAME=project, IMGNORM_SECRET=secret)
    base = [*compose, "-f", str(ROOT / "deploy" / "compose.yaml"),
            "-f", str(ROOT / "deploy" / "compose.serve.yaml"), "-p", project]
    try:
        # Waits for the master's healthcheck (health over TLS) before the workers.
        run([*base, "up", "-d", "--scale", "worker=2", "--no-color"], timeout=180, env=env)
        r = run([*base, "exec", "-T", "master", "/imgnorm", "submit",
                 "--master", "https://localhost:50051", "--tls-ca", CA,
                 "--input", "/data/input", "--output", "/data/output", "--wait"],
                check=False, timeout=180, env=env)
        assert r.returncode == dataset.code, f"{r.stdout}\n{r.stderr}"
        assert_same_output(out_dir, dataset.reference)
        assert_each_image_once(out_dir, dataset.count)

        # The worker service as configured, but with a wrong secret or none.
        for value, expected in [("not-the-secret-" + os.urandom(4).hex(), "wrong secret"),
                                ("", "missing secret")]:
            r = run([*base, "run", "--rm", "-T", "--no-deps", "-e", f"IMGNORM_SECRET={value}",
                     "worker"], check=False, timeout=60, env=env)
            out = r.stdout + r.stderr
            assert r.returncode != 0, out
            assert f"the master refused this worker: {expected}" in out, out
        # Plain text off loopback is refused by the worker itself.
        r = run([*base, "run", "--rm", "-T", "--no-deps", "worker", "worker",
                 "--master", "http://master:50051"], check=False, timeout=60, env=env)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "refusing to connect to http://master:50051" in out, out

        logs = run([*base, "logs", "--no-color"], check=False, env=env)
        text = logs.stdout + logs.stderr
        assert "refused a call with a wrong secret" in text, text[-3000:]
        assert secret not in text, "the secret must never be logged"
    finally:
        run([*base, "down", "-v", "--remove-orphans", "-t", "5"], check=False, env=env)
