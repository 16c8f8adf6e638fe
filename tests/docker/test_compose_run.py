"""The documented compose command, `deploy/compose-run.sh N`, with a worker
container SIGKILLed (`docker kill`) mid-job: the cluster goes on, the job
completes byte-identical to `imgnorm centralized`, and the command returns
the master's exit code. (`compose up --exit-code-from master`, the command
documented before, implies --abort-on-container-exit: the first worker to
die stopped every container and the command returned 137.)
"""

import os
import subprocess
import time

from conftest import ROOT, assert_each_image_once, assert_same_output, compose_cmd, docker, run


def npy_count(out):
    return sum(1 for _ in out.rglob("*.npy"))


def test_compose_run_survives_a_killed_worker(image, dataset, out_dir):
    compose = compose_cmd()
    assert compose is not None, "neither `docker compose` nor `docker-compose` is installed"
    project = "imgnormt" + os.urandom(4).hex()
    env = dict(os.environ, IMGNORM_INPUT=str(dataset.input), IMGNORM_OUTPUT=str(out_dir),
               IMGNORM_BATCH="4", IMGNORM_DELAY_MS="60", COMPOSE_PROJECT_NAME=project,
               IMGNORM_SECRET="compose-test-" + os.urandom(8).hex())
    base = [*compose, "-f", str(ROOT / "deploy" / "compose.yaml"), "-p", project]
    workers_of = ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                  "--filter", "label=com.docker.compose.service=worker"]
    # Exactly the documented command (docs/DOCKER.md, README "Containers").
    p = subprocess.Popen([str(ROOT / "deploy" / "compose-run.sh"), "3"], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        workers = []
        while time.monotonic() < deadline and p.poll() is None:
            workers = run(workers_of, check=False).stdout.split()
            if len(workers) == 3 and npy_count(out_dir) >= dataset.count // 8:
                break
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()[0][-3000:]
        assert len(workers) == 3, workers
        docker("kill", workers[0])
        assert npy_count(out_dir) < dataset.count * 3 // 4, "job finished before the kill mattered"
        out, _ = p.communicate(timeout=240)
        assert p.returncode == dataset.code, out[-4000:]
        assert_same_output(out_dir, dataset.reference)
        assert_each_image_once(out_dir, dataset.count)
        states = run(["docker", "inspect", "-f", "{{.Id}} {{.State.ExitCode}}", *workers]
                     ).stdout.split("\n")
        codes = dict(line.split() for line in states if line.strip())
        assert codes[next(k for k in codes if k.startswith(workers[0]))] == "137", codes
        assert sorted(codes.values()) == ["0", "0", "137"], codes
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        run([*base, "down", "-v", "--remove-orphans", "-t", "5"], check=False, env=env)
