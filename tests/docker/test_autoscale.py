"""The autoscaler's Docker backend against the real engine: a master container
(with the engine's socket) starts worker containers from the project's image
as the queue grows, replaces one that is `docker kill`ed, drains back to the
minimum when idle, adopts its running workers after a master restart, and
leaves no container behind when it stops. Stream mode: the workers have no
volume at all. The dataset must equal `imgnorm centralized`'s.
"""

import time

from conftest import assert_each_image_once, assert_same_output, docker, run

SOCKET = "/var/run/docker.sock"


def owned(owner, all_states=True):
    args = ["ps", "-q", "--filter", f"label=imgnorm.autoscale.owner={owner}"]
    if all_states:
        args.insert(1, "-a")
    return docker(*args).stdout.split()


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_docker_backend_scales_replaces_adopts_and_cleans_up(cluster, dataset, out_dir):
    owner = cluster.id
    cluster.start(
        "master", "master", "--serve", "--quiet",
        "--heartbeat-interval", "0.5", "--heartbeat-timeout", "2", "--batch-size", "4",
        "--autoscale", "docker", "--min-workers", "1", "--max-workers", "3",
        "--target-drain", "1", "--scale-up-cooldown", "1", "--scale-down-window", "3",
        "--drain-grace", "20",
        "--worker-master-url", "http://master:50051", "--docker-network", cluster.net,
        "--docker-owner", owner, "--docker-image", cluster.image,
        user="0:0",
        env={"IMGNORM_TEST_DELAY_PER_IMAGE_MS": "150"},
        volumes=[f"{SOCKET}:{SOCKET}", f"{dataset.input}:/data/input:ro",
                 f"{out_dir}:/data/output"])
    url = cluster.url()

    def scale(s):
        return (s or {}).get("autoscale") or {}

    cluster.wait_status(url, lambda s: scale(s).get("running") == 1, timeout=60,
                        what="one idle worker container")
    r = run([cluster.host_bin, "submit", "--master", url, "--insecure", "--input", "/data/input",
             "--output", "/data/output", "--transfer", "stream"])
    assert "submitted job-" in r.stdout
    cluster.wait_status(url, lambda s: scale(s).get("desired") == 3
                        and scale(s).get("running", 0) >= 2, timeout=60,
                        what="the pool to grow to 3")
    running = owned(owner, all_states=False)
    assert len(running) >= 2, running
    docker("kill", running[0])
    cluster.wait_status(url, lambda s: scale(s).get("died_total", 0) >= 1, timeout=30,
                        what="the killed container to be noticed")
    # Replaced while the queue is still long (a young death holds starts back
    # for 2 s; at 150 ms per image the job lasts well beyond that).
    cluster.wait_status(url, lambda s: scale(s).get("started_total", 0) >= 4, timeout=30,
                        what="the killed container to be replaced")
    cluster.wait_status(url, lambda s: s["jobs"] and s["jobs"][0]["state"] == "done",
                        timeout=180, what="the job")
    assert_same_output(out_dir, dataset.reference)
    assert_each_image_once(out_dir, dataset.count)
    s = cluster.wait_status(url, lambda s: scale(s).get("desired") == 1
                            and scale(s).get("running") == 1
                            and scale(s).get("draining") == 0,
                            timeout=60, what="the pool to drain back to 1")
    assert scale(s)["started_total"] >= 4, s
    # Drained containers are removed, not just stopped.
    wait(lambda: len(owned(owner)) == 1, 30, "one container left")

    # A new master with the same owner adopts the running worker.
    survivor = owned(owner)
    docker("kill", cluster.name("master"))
    docker("start", cluster.name("master"))
    url = cluster.url()
    s = cluster.wait_status(url, lambda s: scale(s).get("running") == 1, timeout=60,
                            what="the adopted worker to register with the new master")
    assert scale(s)["started_total"] == 0, s
    assert owned(owner) == survivor

    # Stopping the master stops and removes its workers.
    docker("stop", "-t", "30", cluster.name("master"), timeout=60)
    wait(lambda: not owned(owner), 30, "the worker containers to be removed")
