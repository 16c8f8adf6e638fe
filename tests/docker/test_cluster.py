"""imgnorm as containers: the image built FROM scratch, a master and workers on
a private Docker network, and faults a single host can
stage (a killed worker, a network partition, a master restart), plus stream
mode with no shared volume (the compose command: test_compose_run.py). Each run's output must be byte-identical to
`imgnorm centralized` on the host (except stats.json and provenance.jsonl).

Run with scripts/test-docker.sh. IMGNORM_SKIP_DOCKER=1 skips (loudly);
IMGNORM_REQUIRE_DOCKER=1 turns a missing Docker into a failure.
"""

import time

from conftest import assert_each_image_once, assert_same_output, docker, run

# Fast failure detection so that fault tests take seconds, not minutes.
FAST = ["--heartbeat-interval", "0.5", "--heartbeat-timeout", "2", "--batch-size", "4"]
SLOW_WORKER = ["--delay-per-image-ms", "50"]


def vols(dataset, out):
    return [f"{dataset.input}:/data/input:ro", f"{out}:/data/output"]


def one_job_master(cluster, dataset, out, *extra):
    return cluster.start("master", "master", "--input", "/data/input", "--output",
                         "/data/output", "--quiet", *FAST, *extra,
                         volumes=vols(dataset, out))


def job_progress(s):
    return s["jobs"][0]["done"] if s["jobs"] else 0


def test_image_is_scratch_static_and_non_root(image):
    cfg = docker("image", "inspect", "-f", "{{.Config.User}} {{json .Config.Entrypoint}}",
                 image).stdout.strip()
    assert cfg == '10001:10001 ["/imgnorm"]', cfg
    # One layer per COPY and nothing else: no base image.
    layers = docker("image", "inspect", "-f", "{{len .RootFS.Layers}}", image).stdout.strip()
    assert int(layers) <= 4, layers
    r = docker("run", "--rm", "--label", "imgnorm.test=1", image, "--version")
    assert r.stdout.startswith("imgnorm "), r.stdout


def test_health_probe_in_container(cluster, dataset, out_dir):
    cluster.start("master", "master", "--serve", "--quiet")
    url = cluster.url()
    deadline = time.monotonic() + 30
    while True:
        r = run([cluster.host_bin, "health", "--master", url, "--timeout", "1"], check=False)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.returncode == 0 and r.stdout.strip() == "SERVING", r
    # The probe a compose healthcheck runs: inside the container, no shell.
    r = docker("exec", cluster.name("master"), "/imgnorm", "health", "--master",
               "http://localhost:50051")
    assert r.stdout.strip() == "SERVING"
    # Nobody listening: exit 1, quickly.
    t = time.monotonic()
    r = docker("exec", cluster.name("master"), "/imgnorm", "health", "--master",
               "http://localhost:1", "--timeout", "1", check=False)
    assert r.returncode == 1 and time.monotonic() - t < 10, r


def test_master_and_three_workers(cluster, dataset, out_dir):
    one_job_master(cluster, dataset, out_dir)
    for i in range(3):
        cluster.start(f"w{i}", "worker", "--master", "http://master:50051", "--name", f"w{i}",
                      volumes=vols(dataset, out_dir))
    assert cluster.wait_exit("master", timeout=120) == dataset.code, cluster.logs("master")
    assert_same_output(out_dir, dataset.reference)
    assert_each_image_once(out_dir, dataset.count)
    # docker stop sends SIGTERM: a worker drains and exits 0.
    docker("stop", "-t", "20", cluster.name("w0"))
    assert cluster.wait_exit("w0") == 0, cluster.logs("w0")


def test_kill_worker_mid_job(cluster, dataset, out_dir):
    one_job_master(cluster, dataset, out_dir)
    for i in range(3):
        cluster.start(f"w{i}", "worker", "--master", "http://master:50051", "--name", f"w{i}",
                      *SLOW_WORKER, volumes=vols(dataset, out_dir))
    url = cluster.url()
    cluster.wait_status(url, lambda s: job_progress(s) >= dataset.count // 6,
                        what="the job to get going")
    docker("kill", cluster.name("w1"))
    s = cluster.wait_status(url, lambda s: any(
        w["name"] == "w1" and w["state"] == "dead" for w in s["workers"]),
        what="w1 declared dead")
    assert job_progress(s) < dataset.count, "job finished before the kill mattered"
    assert cluster.wait_exit("master", timeout=120) == dataset.code, cluster.logs("master")
    assert_same_output(out_dir, dataset.reference)
    assert_each_image_once(out_dir, dataset.count)


def test_network_partition(cluster, dataset, out_dir):
    one_job_master(cluster, dataset, out_dir)
    for i in range(3):
        cluster.start(f"w{i}", "worker", "--master", "http://master:50051", "--name", f"w{i}",
                      "--delay-per-image-ms", "80", volumes=vols(dataset, out_dir))
    url = cluster.url()
    cluster.wait_status(url, lambda s: job_progress(s) >= dataset.count // 8,
                        what="the job to get going")
    docker("network", "disconnect", cluster.net, cluster.name("w2"))
    s = cluster.wait_status(url, lambda s: any(
        w["name"] == "w2" and w["state"] == "dead" for w in s["workers"]),
        what="w2 declared dead")
    assert job_progress(s) < dataset.count, "job finished before the partition mattered"
    docker("network", "connect", "--alias", "w2", cluster.net, cluster.name("w2"))
    assert cluster.wait_exit("master", timeout=120) == dataset.code, cluster.logs("master")
    assert_same_output(out_dir, dataset.reference)
    assert_each_image_once(out_dir, dataset.count)


def test_master_restart_workers_come_back(cluster, dataset, out_dir):
    v = vols(dataset, out_dir)
    cluster.start("master", "master", "--serve", "--quiet", *FAST, volumes=v)
    for i in range(3):
        cluster.start(f"w{i}", "worker", "--master", "http://master:50051", "--name", f"w{i}",
                      volumes=v)

    def live(s):
        return sorted(w["worker_id"] for w in s["workers"] if w["state"] == "alive")

    cluster.wait_status(cluster.url(), lambda s: len(live(s)) == 3, what="3 live workers")
    # SIGTERM, then start again. The master must exit by itself although
    # workers hold sessions open: not after the 10 s timeout with SIGKILL.
    t = time.monotonic()
    docker("restart", "-t", "10", cluster.name("master"))
    assert time.monotonic() - t < 8, "the master ignored SIGTERM until SIGKILL"
    url = cluster.url()  # the address may change with the restart
    # A restarted master starts empty: the 3 it lists registered anew.
    cluster.wait_status(url, lambda s: len(live(s)) == 3, timeout=60,
                        what="3 workers back after the restart")
    r = run([cluster.host_bin, "submit", "--master", url, "--insecure", "--input", "/data/input",
             "--output", "/data/output", "--wait"], check=False, timeout=120)
    assert r.returncode == dataset.code, f"{r.stdout}\n{r.stderr}\n{cluster.logs('master')}"
    assert_same_output(out_dir, dataset.reference)


def test_stream_mode_without_shared_volume(cluster, dataset, out_dir):
    one_job_master(cluster, dataset, out_dir, "--transfer", "stream")
    for i in range(3):
        # No volume at all: pixels travel through the master over gRPC.
        cluster.start(f"w{i}", "worker", "--master", "http://master:50051", "--name", f"w{i}")
    assert cluster.wait_exit("master", timeout=120) == dataset.code, cluster.logs("master")
    assert_same_output(out_dir, dataset.reference)
    assert_each_image_once(out_dir, dataset.count)


def test_master_killed_and_started_again_resumes_the_job(cluster, dataset, out_dir, tmp_path):
    """The master keeps its state in a volume (--data-dir): SIGKILLed mid-job
    (`docker kill`) and started again (`docker start`, the same command), it
    resumes the job; workers reconnect by themselves; same bytes."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    v = vols(dataset, out_dir)
    cluster.start("master", "master", "--input", "/data/input", "--output", "/data/output",
                  "--quiet", "--data-dir", "/data/state", *FAST,
                  volumes=[*v, f"{state}:/data/state"])
    for i in range(3):
        cluster.start(f"w{i}", "worker", "--master", "http://master:50051", "--name", f"w{i}",
                      *SLOW_WORKER, volumes=v)
    s = cluster.wait_status(cluster.url(), lambda s: job_progress(s) >= dataset.count // 3,
                            what="a third of the job")
    docker("kill", cluster.name("master"))
    docker("start", cluster.name("master"))
    url = cluster.url()  # the address may change with the restart
    s = cluster.wait_status(url, lambda s: job_progress(s) > 0, timeout=60,
                            what="the restarted master to resume")
    assert job_progress(s) < dataset.count, "job finished before the kill mattered"
    assert cluster.wait_exit("master", timeout=180) == dataset.code, cluster.logs("master")
    assert "resuming job-1" in cluster.logs("master"), cluster.logs("master")
    assert_same_output(out_dir, dataset.reference)
    assert_each_image_once(out_dir, dataset.count)
