#!/usr/bin/env python3
"""Load test (issue 9): many tiny images, a master and N worker processes on
one machine, a worker SIGKILLed (and optionally one SIGSTOPped) mid-run.

Measures, from outside the processes (no instrumentation in imgnorm):

* the master's memory (VmRSS, VmHWM from /proc/PID/status, sampled), and the
  workers';
* throughput: images/s over the whole job and in steady state;
* recovery from a worker loss: when the master notices, when the lost
  images are handed out again and finished, and when throughput is back;
* correctness: one manifest row per image, the corrupt ones failed, and the
  manifest equal to `imgnorm centralized`'s (checksums included).

It prints a markdown table and writes a JSON file with every run, every
sample and the machine. The definitions of the numbers are in
docs/RELIABILITY.md ("Load"); keep the two in step.

    IMGNORM_BIN=target/release/imgnorm python3 benchmarks/load_test.py \
        --images 100000 --workers 8 --repeat 2
    # smoke (seconds): --images 500 --workers 2
    # extra master flags (e.g. persistence): IMGNORM_LOAD_MASTER_ARGS="--data-dir D"
    #   or --master-args "..." (a fresh copy of D per run: --fresh-dir D)

Python 3.11 standard library only; Linux (/proc). Exit status 0 when every
run passed its correctness checks, 1 otherwise, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATASET_VERSION = 1  # bump when the dataset recipe below changes
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LISTEN = re.compile(r"imgnorm master listening on (\S+)")
# tracing-subscriber's default line: `2026-11-25T15:07:16.123456Z  INFO target: msg k=v ...`
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z)\s+(\w+)\s+(\S+?):\s+(.*)$")


# ----------------------------------------------------------------------------
# small helpers


def now() -> float:
    """Wall clock (seconds since the epoch): comparable with log timestamps
    and file mtimes, which are what the recovery times are measured from."""
    return time.time()


def parse_log_time(s: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def proc_mem_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = hwm = None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    if rss is None or hwm is None:  # a zombie has no Vm* lines
        return None
    return rss, hwm


def mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def machine_info(binary: Path) -> dict:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def cmd(*args: str) -> str:
        try:
            return subprocess.run(
                args, capture_output=True, text=True, timeout=20, check=False
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = cmd("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    if commit and cmd("git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "mem_total_mib": round(int(first("/proc/meminfo", "MemTotal").split()[0]) / 1024),
        "kernel": os.uname().release,
        "loadavg_start": os.getloadavg(),
        "commit": commit or "?",
        "binary": str(binary),
        "binary_version": cmd(str(binary), "--version"),
        "python": sys.version.split()[0],
    }


# ----------------------------------------------------------------------------
# dataset


def corrupt_kind(i: int) -> str:
    return ("empty", "random", "truncated", "text")[i % 4]


def ensure_dataset(a: argparse.Namespace, binary: Path) -> tuple[Path, list[str], set[str], dict]:
    """Generates the images once per recipe (reused while READY.json matches)
    and returns (input folder, sorted relative paths, corrupt paths, info)."""
    recipe = {
        "version": DATASET_VERSION,
        "images": a.images,
        "size": a.size,
        "format": a.format,
        "seed": a.seed,
        "classes": a.classes,
        "corrupt_every": a.corrupt_every,
    }
    root = a.data_dir / f"{a.format}-{a.images}-{a.size}-seed{a.seed}-c{a.corrupt_every}"
    ready = root / "READY.json"
    if ready.is_file():
        info = json.loads(ready.read_text())
        if info.get("recipe") == recipe:
            files = (root / "files.txt").read_text().splitlines()
            corrupt = set((root / "corrupt.txt").read_text().splitlines())
            info["reused"] = True
            return root / "in", files, corrupt, info
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = now()
    gen = [
        str(binary), "gen", "--out", str(root / "in"), "--count", str(a.images),
        "--seed", str(a.seed), "--format", a.format, "--size", a.size,
        "--classes", str(a.classes),
    ]
    subprocess.run(gen, check=True, stdout=subprocess.DEVNULL)
    gen_s = now() - t0
    files = sorted(
        str(p.relative_to(root / "in")) for p in (root / "in").rglob("*") if p.is_file()
    )
    # Deterministic corruption of every `corrupt_every`-th file (sorted order),
    # cycling through kinds that must all become `failed` rows: 0 bytes, random
    # bytes, a JPEG/PNG cut in half (others get random bytes), text.
    rng = random.Random(a.seed)
    corrupt = []
    if a.corrupt_every > 0:
        for n, rel in enumerate(files[a.corrupt_every // 2 :: a.corrupt_every]):
            p = root / "in" / rel
            kind = corrupt_kind(n)
            if kind == "truncated" and p.suffix.lower() not in (".jpg", ".png"):
                kind = "random"
            if kind == "empty":
                p.write_bytes(b"")
            elif kind == "random":
                p.write_bytes(rng.randbytes(200))
            elif kind == "truncated":
                data = p.read_bytes()
                p.write_bytes(data[: len(data) // 2])
            else:
                p.write_bytes(b"this is not an image\n" * 4)
            corrupt.append(rel)
    (root / "files.txt").write_text("\n".join(files) + "\n")
    (root / "corrupt.txt").write_text("".join(c + "\n" for c in corrupt))
    size = sum((root / "in" / f).stat().st_size for f in files)
    info = {"recipe": recipe, "gen_s": r3(gen_s), "bytes": size, "files": len(files),
            "corrupt": len(corrupt), "reused": False}
    ready.write_text(json.dumps(info, indent=1) + "\n")
    return root / "in", files, set(corrupt), info


# ----------------------------------------------------------------------------
# one run


class Run:
    """A master and its workers, the samplers watching them, and the faults."""

    def __init__(self, a, binary: Path, inp: Path, work: Path, n_images: int):
        self.a, self.bin, self.inp, self.work = a, binary, inp, work
        self.out = work / "out"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.n_images = n_images
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.status: list[dict] = []  # {"t0","t1","jobs","workers"} per poll
        self.mem: list[dict] = []  # {"t","master":[rss,hwm],"workers":{i:[rss,hwm]}}
        self.log_events: list[dict] = []
        self.events: dict = {}
        self.url = ""
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.listening = threading.Event()
        self.errors: list[str] = []

    # -- processes -------------------------------------------------------------

    def start(self) -> None:
        env = dict(os.environ, NO_COLOR="1")
        env.setdefault("IMGNORM_LOG", "info")
        margs = [
            str(self.bin), "master", "--input", str(self.inp), "--output", str(self.out),
            "--listen", "127.0.0.1:0", "--quiet", *self.a.master_args_list,
        ]
        self.events["master_cmd"] = shlex.join(margs)
        self.events["t_spawn"] = now()
        self.master = subprocess.Popen(
            margs, stdout=open(self.logs / "master.out", "wb"), stderr=subprocess.PIPE,
            env=env, cwd=self.work,
        )
        threading.Thread(target=self._read_master_stderr, daemon=True).start()
        if not self.listening.wait(120):
            raise RuntimeError(f"master did not print its address; see {self.logs}/master.err")
        self.events["t_listening"] = now()
        for i in range(self.a.workers):
            wargs = [
                str(self.bin), "worker", "--master", self.url, "--name", f"load-w{i}",
                *self.a.worker_args_list,
            ]
            f = open(self.logs / f"worker{i}.log", "wb")
            self.workers.append(
                subprocess.Popen(wargs, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=self.work)
            )
        self.events["worker_cmd"] = shlex.join(wargs)
        threading.Thread(target=self._sample_mem, daemon=True).start()
        threading.Thread(target=self._poll_status, daemon=True).start()

    def _read_master_stderr(self) -> None:
        assert self.master and self.master.stderr
        with open(self.logs / "master.err", "w") as log:
            for raw in self.master.stderr:
                t_recv = now()
                line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
                log.write(line + "\n")
                log.flush()
                m = LISTEN.search(line)
                if m and not self.listening.is_set():
                    self.url = "http://" + m.group(1)
                    self.listening.set()
                    continue
                m = LOG_LINE.match(line)
                if not m:
                    continue
                msg = m.group(4)
                fields = dict(re.findall(r"(\w+)=(\S+)", msg))
                text = re.sub(r"\s\w+=\S+", "", msg).strip()
                t = parse_log_time(m.group(1)) or t_recv
                with self.lock:
                    self.log_events.append(
                        {"t": t, "level": m.group(2), "msg": text, "fields": fields}
                    )

    def _sample_mem(self) -> None:
        assert self.master
        while not self.stop.is_set():
            s = {"t": now(), "master": proc_mem_kib(self.master.pid), "workers": {}}
            for i, w in enumerate(self.workers):
                m = proc_mem_kib(w.pid)
                if m is not None:
                    s["workers"][i] = m
            with self.lock:
                self.mem.append(s)
            self.stop.wait(self.a.mem_interval)

    def _poll_status(self) -> None:
        cmd = [str(self.bin), "status", "--master", self.url, "--json"]
        while not self.stop.is_set():
            t0 = now()
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
                t1 = now()
                if p.returncode == 0:
                    s = json.loads(p.stdout)
                    with self.lock:
                        self.status.append({"t0": t0, "t1": t1, **s})
            except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError):
                pass
            self.stop.wait(max(0.0, self.a.poll - (now() - t0)))

    # -- status views ----------------------------------------------------------

    def latest(self) -> dict | None:
        with self.lock:
            return self.status[-1] if self.status else None

    def fraction_done(self) -> float:
        s = self.latest()
        if not s or not s["jobs"]:
            return 0.0
        j = s["jobs"][0]
        if j.get("phase") == "stats":
            return 0.0
        return j["done"] / max(1, j["images"])

    def worker_row(self, s: dict, name: str, worker_id: str | None = None) -> dict | None:
        rows = [w for w in s["workers"] if w["name"] == name]
        if worker_id is not None:
            rows = [w for w in rows if w["worker_id"] == worker_id]
        return rows[-1] if rows else None

    def wait_for(self, pred, timeout: float) -> dict | None:
        """The first status sample (taken after this call) for which pred holds."""
        deadline = now() + timeout
        seen = len(self.status)
        while now() < deadline and self.master.poll() is None:
            with self.lock:
                fresh = self.status[seen:]
                seen = len(self.status)
            for s in fresh:
                if pred(s):
                    return s
            time.sleep(self.a.poll / 4)
        return None

    def wait_fraction(self, f: float) -> bool:
        while self.master.poll() is None:
            if self.fraction_done() >= f:
                return True
            time.sleep(self.a.poll / 4)
        return False

    # -- faults ----------------------------------------------------------------

    def inject(self) -> None:
        a = self.a
        if a.kill_at is not None and a.workers >= 2:
            self._fault("kill", a.kill_at, a.kill_worker)
        if a.stop_at is not None and a.workers >= 2:
            self._fault("stop", a.stop_at, a.stop_worker)

    def _fault(self, kind: str, at: float, idx: int) -> None:
        a = self.a
        ev = {"kind": kind, "at_fraction": at, "worker": idx, "name": f"load-w{idx}"}
        self.events.setdefault("faults", []).append(ev)
        if not self.wait_fraction(at):
            ev["skipped"] = "job finished first"
            return
        s = self.latest()
        row = self.worker_row(s, ev["name"])
        if row is None or row["state"] != "alive":
            ev["skipped"] = f"worker {ev['name']} not alive at the fault"
            return
        ev.update(worker_id=row["worker_id"], leases_before=row["leases"],
                  images_done_before=row["images_done"], fraction_done=self.fraction_done())
        pid = self.workers[idx].pid
        ev["t_fault"] = now()
        os.kill(pid, signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
        wid = row["worker_id"]
        dead = self.wait_for(
            lambda s: (r := self.worker_row(s, ev["name"], wid)) is not None and r["state"] == "dead",
            timeout=a.fault_timeout,
        )
        ev["t_dead_status"] = dead["t1"] if dead else None
        if kind == "stop":
            if dead is None:
                ev["note"] = "never declared dead while stopped"
            time.sleep(a.stop_hold)
            ev["t_cont"] = now()
            os.kill(pid, signal.SIGCONT)
            back = self.wait_for(
                lambda s: any(
                    w["name"] == ev["name"] and w["worker_id"] != wid and w["state"] == "alive"
                    for w in s["workers"]
                ),
                timeout=a.fault_timeout,
            )
            ev["t_rejoined_status"] = back["t1"] if back else None

    # -- end -------------------------------------------------------------------

    def wait_end(self) -> int:
        try:
            rc = self.master.wait(self.a.timeout)
        except subprocess.TimeoutExpired:
            self.errors.append(f"master still running after {self.a.timeout}s: killed")
            self.master.kill()
            rc = self.master.wait()
        self.events["t_master_exit"] = now()
        self.stop.set()
        for w in self.workers:
            if w.poll() is None:
                try:
                    w.send_signal(signal.SIGCONT)
                    w.terminate()
                except ProcessLookupError:
                    pass
        for w in self.workers:
            try:
                w.wait(10)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        return rc


# ----------------------------------------------------------------------------
# analysis


def rate_between(samples: list[dict], t_a: float, t_b: float, count) -> float | None:
    """Images/s over [t_a, t_b] from status samples, using count(sample) at
    the samples nearest to each end (midpoint of the poll)."""
    if not samples or t_b <= t_a:
        return None
    mid = lambda s: (s["t0"] + s["t1"]) / 2  # noqa: E731
    before = [s for s in samples if mid(s) <= t_a]
    after = [s for s in samples if mid(s) >= t_b]
    if not before or not after:
        return None
    s0, s1 = before[-1], after[0]
    span = mid(s1) - mid(s0)
    return (count(s1) - count(s0)) / span if span > 0 else None


def output_mtimes(out: Path, files: list[str]):
    for rel in files:
        try:
            yield (out / (rel + ".npy")).stat().st_mtime
        except OSError:
            pass  # failed rows have no output


def job_done(s: dict) -> int:
    j = s["jobs"][0] if s["jobs"] else None
    return j["done"] if j and j.get("phase") != "stats" else 0


def survivors_done(names: set[str]):
    """images_done summed over workers with these names (a worker that rejoined
    under the same name counts with both of its ids)."""
    return lambda s: sum(w["images_done"] for w in s["workers"] if w["name"] in names)


def analyse(run: Run, a, rc: int, files: list[str], corrupt: set[str]) -> dict:
    ev = run.events
    st = [s for s in run.status if s["jobs"]]
    t_spawn = ev["t_spawn"]
    res: dict = {"master_exit": rc, "errors": run.errors}
    # -- summary line
    try:
        res["summary"] = json.loads((run.logs / "master.out").read_text().strip().splitlines()[-1])
    except (OSError, IndexError, json.JSONDecodeError):
        res["summary"] = None
        run.errors.append("no JSON summary line from the master")
    try:
        stats = json.loads((run.out / "stats.json").read_text())
    except (OSError, json.JSONDecodeError):
        stats = {}
    # -- time and throughput
    # Each output's mtime is when its worker wrote it (atomic rename keeps the
    # temp file's mtime): exact per-image completion times, no polling.
    n = len(files)
    job_s = res["summary"]["seconds"] if res["summary"] else None
    mtimes = sorted(output_mtimes(run.out, files))
    t_registered = next(
        (s["t1"] for s in st if sum(w["state"] == "alive" for w in s["workers"]) >= a.workers), None
    )
    res["time"] = {
        "wall_s": r3(ev["t_master_exit"] - t_spawn),
        "job_s": job_s,
        "spawn_to_all_workers_s": r3(t_registered - t_spawn) if t_registered else None,
        "spawn_to_first_image_s": r3(mtimes[0] - t_spawn) if mtimes else None,
        "spawn_to_last_image_s": r3(mtimes[-1] - t_spawn) if mtimes else None,
        "last_image_to_master_exit_s": r3(ev["t_master_exit"] - mtimes[-1]) if mtimes else None,
    }
    steady = None
    if len(mtimes) >= 20:
        i10, i90 = len(mtimes) // 10, (9 * len(mtimes)) // 10
        if mtimes[i90] > mtimes[i10]:
            steady = (i90 - i10) / (mtimes[i90] - mtimes[i10])
    res["throughput"] = {
        "images_per_s": r3(n / job_s) if job_s else None,
        "steady_10_90_images_per_s": r3(steady),
        "outputs_timed": len(mtimes),
    }
    t_all = mtimes[-1] if mtimes else None
    # -- memory
    m_rss = [s["master"][0] for s in run.mem if s["master"]]
    m_hwm = [s["master"][1] for s in run.mem if s["master"]]
    w_hwm: dict[int, int] = {}
    w_rss_sum = []
    for s in run.mem:
        for i, (rss, hwm) in s["workers"].items():
            w_hwm[i] = max(w_hwm.get(i, 0), hwm)
        if s["workers"]:
            w_rss_sum.append(sum(v[0] for v in s["workers"].values()))
    res["memory_mib"] = {
        "master_peak_vmhwm": mib(max(m_hwm) if m_hwm else None),
        "master_peak_from_stats_json": stats.get("peak_rss_mib"),
        "master_rss_max": mib(max(m_rss) if m_rss else None),
        "master_rss_median": mib(statistics.median(m_rss) if m_rss else None),
        "master_rss_last": mib(m_rss[-1] if m_rss else None),
        # when the master's RSS was highest, and its RSS once every image was
        # written (the rest is the manifest, provenance and stats being written)
        "master_rss_max_at_s": r3(
            max((s for s in run.mem if s["master"]), key=lambda s: s["master"][0])["t"] - t_spawn
        ) if m_rss else None,
        "master_rss_at_last_image": mib(next(
            (s["master"][0] for s in run.mem if s["master"] and t_all and s["t"] >= t_all), None
        )),
        "worker_peak_vmhwm_max": mib(max(w_hwm.values()) if w_hwm else None),
        "worker_peak_vmhwm_median": mib(statistics.median(w_hwm.values()) if w_hwm else None),
        "workers_rss_sum_max": mib(max(w_rss_sum) if w_rss_sum else None),
        "samples": len(run.mem),
    }
    # -- faults
    prov = []
    try:
        prov = [json.loads(l) for l in (run.out / "provenance.jsonl").read_text().splitlines() if l]
    except (OSError, json.JSONDecodeError):
        run.errors.append("no provenance.jsonl")
    lease_sizes: dict[int, int] = {}
    for p in prov:
        lease_sizes[p["lease"]] = lease_sizes.get(p["lease"], 0) + 1
    # Images re-done after a worker death: handed out again as suspects, one
    # image per lease, attempt >= 2. (A speculative copy at the job's tail
    # can also be a single-image lease with attempt >= 2; the count is checked
    # against the master's own "requeued" numbers below.)
    redone = [p for p in prov if p["attempt"] >= 2 and lease_sizes[p["lease"]] == 1]
    redone_t = []
    for p in redone:
        try:
            redone_t.append((run.out / (p["path"] + ".npy")).stat().st_mtime)
        except OSError:
            pass  # a failed row has no output
    res["redone_images"] = len(redone)
    res["attempt_ge2_images"] = sum(p["attempt"] >= 2 for p in prov)
    faults = []
    names = {f"load-w{i}" for i in range(a.workers)}
    for f in ev.get("faults", []):
        out = {k: f.get(k) for k in ("kind", "worker", "name", "worker_id", "leases_before",
                                     "images_done_before", "skipped", "note")}
        out = {k: v for k, v in out.items() if v is not None}
        if "t_fault" not in f:
            faults.append(out)
            continue
        tf = f["t_fault"]
        out["at_fraction"] = r3(f["fraction_done"])
        out["at_s"] = r3(tf - t_spawn)
        # the master's own log line for this worker's death
        wid = f"w{f['worker_id']}"
        death = next(
            (e for e in run.log_events if e["fields"].get("worker") == wid
             and ("disconnected" in e["msg"] or "declared dead" in e["msg"])),
            None,
        )
        out["detect_log_s"] = r3(death["t"] - tf) if death else None
        out["requeued"] = int(death["fields"].get("requeued", 0)) if death else None
        out["detect_status_s"] = r3(f["t_dead_status"] - tf) if f.get("t_dead_status") else None
        if f["kind"] == "stop":
            out["cont_s"] = r3(f["t_cont"] - tf)
            out["rejoin_after_cont_s"] = (
                r3(f["t_rejoined_status"] - f["t_cont"]) if f.get("t_rejoined_status") else None
            )
        # throughput of the workers that stayed, before and after the fault
        stay = names - {f["name"]}
        w = a.rate_window
        pre = rate_between(st, tf - w, tf, survivors_done(stay))
        pre_all = rate_between(st, tf - w, tf, job_done)
        post = rate_between(st, tf, tf + w, survivors_done(stay))
        post_all = rate_between(st, tf, tf + w, job_done)
        out["survivors_rate_before"] = r3(pre)
        out["survivors_rate_after"] = r3(post)
        out["total_rate_before"] = r3(pre_all)
        out["total_rate_after"] = r3(post_all)
        # rate recovery: the first 1 s window starting at fault + d (d in poll
        # steps) whose survivors' rate is >= 90 % of theirs before the fault
        rec = None
        if pre:
            d = 0.0
            while tf + d + 1.0 <= (t_all or ev["t_master_exit"]):
                r = rate_between(st, tf + d, tf + d + 1.0, survivors_done(stay))
                if r is not None and r >= 0.9 * pre:
                    rec = d
                    break
                d += a.poll
        out["rate_recovered_s"] = r3(rec)
        faults.append(out)
    requeued_total = sum(f.get("requeued") or 0 for f in faults)
    fault_times = [f["t_fault"] for f in ev.get("faults", []) if "t_fault" in f]
    if redone_t and fault_times:
        t_first_fault = min(fault_times)
        res["recovery"] = {
            "lost_images_requeued": requeued_total,
            "redone_images": len(redone),
            "redone_matches_requeued": len(redone) == requeued_total,
            "first_redone_written_s": r3(min(redone_t) - t_first_fault),
            "last_redone_written_s": r3(max(redone_t) - t_first_fault),
            "last_redone_before_job_end_s": r3((t_all or ev["t_master_exit"]) - max(redone_t)),
        }
    else:
        res["recovery"] = {"lost_images_requeued": requeued_total, "redone_images": len(redone)}
    res["faults"] = faults
    # -- correctness
    res["correctness"] = check_outputs(run, a, files, corrupt)
    return res


def check_outputs(run: Run, a, files: list[str], corrupt: set[str]) -> dict:
    c: dict = {}
    try:
        rows = [json.loads(l) for l in (run.out / "manifest.jsonl").read_text().splitlines() if l]
    except (OSError, json.JSONDecodeError) as e:
        return {"passed": False, "problems": [f"manifest unreadable: {e}"]}
    problems = []
    paths = [r["path"] for r in rows]
    c["rows"] = len(rows)
    if len(paths) != len(set(paths)):
        problems.append(f"{len(paths) - len(set(paths))} duplicate manifest rows")
    if set(paths) != set(files):
        problems.append(
            f"manifest vs input: {len(set(files) - set(paths))} missing, {len(set(paths) - set(files))} extra"
        )
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    c["by_status"] = by_status
    bad_corrupt = [r["path"] for r in rows if r["path"] in corrupt and r["status"] != "failed"]
    bad_good = [r["path"] for r in rows if r["path"] not in corrupt and r["status"] != "ok"]
    if bad_corrupt:
        problems.append(f"{len(bad_corrupt)} corrupt files not failed, e.g. {bad_corrupt[:3]}")
    if bad_good:
        problems.append(f"{len(bad_good)} good files not ok, e.g. {bad_good[:3]}")
    # -- against centralized
    if a.verify != "none":
        ref = centralized_manifest(run, a, files)
        c["centralized"] = ref["info"]
        mine = {r["path"]: r for r in rows}
        diff = [p for p, r in ref["rows"].items() if mine.get(p) != r]
        c["centralized"]["compared_rows"] = len(ref["rows"])
        c["centralized"]["differing_rows"] = len(diff)
        if diff:
            problems.append(f"{len(diff)} rows differ from centralized, e.g. {diff[:3]}")
        if a.verify == "full":
            same = (run.out / "manifest.jsonl").read_bytes() == ref["bytes"]
            c["centralized"]["manifest_bytes_identical"] = same
            if not same:
                problems.append("manifest.jsonl is not byte-identical to centralized's")
    c["problems"] = problems
    c["passed"] = not problems
    return c


_CENTRAL_CACHE: dict = {}


def centralized_manifest(run: Run, a, files: list[str]) -> dict:
    """Runs `imgnorm centralized` once per invocation (on everything, or on a
    seeded sample linked into a scratch tree) and returns its manifest rows."""
    if "ref" in _CENTRAL_CACHE:
        return _CENTRAL_CACHE["ref"]
    scratch = Path(tempfile.mkdtemp(prefix="central-", dir=run.work.parent))
    try:
        if a.verify == "full":
            src = run.inp
            chosen = files
        else:
            chosen = sorted(random.Random(a.seed).sample(files, min(a.verify_sample, len(files))))
            src = scratch / "in"
            for rel in chosen:
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(run.inp / rel, src / rel)
                except OSError:
                    shutil.copy2(run.inp / rel, src / rel)
        t0 = now()
        p = subprocess.run(
            [str(run.bin), "centralized", "--input", str(src), "--output", str(scratch / "out"), "--quiet"],
            capture_output=True, text=True, check=False,
        )
        secs = now() - t0
        try:
            summary = json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            summary = None
        data = (scratch / "out" / "manifest.jsonl").read_bytes()
        rows = {r["path"]: r for r in map(json.loads, data.decode().splitlines())}
        info = {"mode": a.verify, "images": len(chosen), "exit": p.returncode,
                "wall_s": r3(secs), "summary": summary}
        _CENTRAL_CACHE["ref"] = {"rows": rows, "bytes": data, "info": info}
        return _CENTRAL_CACHE["ref"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------
# report


COLUMNS = [
    ("run", lambda r: r["label"]),
    ("images", lambda r: r["images"]),
    ("workers", lambda r: r["workers"]),
    ("job s", lambda r: r["time"]["job_s"]),
    ("images/s", lambda r: r["throughput"]["images_per_s"]),
    ("steady images/s (10–90 %)", lambda r: r["throughput"]["steady_10_90_images_per_s"]),
    ("master peak RSS MiB", lambda r: r["memory_mib"]["master_peak_vmhwm"]),
    ("master RSS median MiB", lambda r: r["memory_mib"]["master_rss_median"]),
    ("worker peak RSS MiB (max)", lambda r: r["memory_mib"]["worker_peak_vmhwm_max"]),
    ("correct", lambda r: "yes" if r["correctness"]["passed"] else "NO"),
]

FAULT_COLUMNS = [
    ("run", lambda r, f: r["label"]),
    ("fault", lambda r, f: f"{f['kind']} {f['name']}" + (f" ({f['skipped']})" if f.get("skipped") else "")),
    ("at", lambda r, f: f"{f.get('at_s')} s ({round(100 * f['at_fraction'])} %)" if "at_s" in f else "–"),
    ("lost images", lambda r, f: f.get("requeued")),
    ("noticed (log) s", lambda r, f: f.get("detect_log_s")),
    ("noticed (status) s", lambda r, f: f.get("detect_status_s")),
    ("rate back s", lambda r, f: f.get("rate_recovered_s")),
    ("survivors img/s before → after", lambda r, f: f"{fmt(f.get('survivors_rate_before'))} → {fmt(f.get('survivors_rate_after'))}"),
    ("rejoined after SIGCONT s", lambda r, f: f.get("rejoin_after_cont_s", "–")),
]


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table(cols, rows) -> str:
    out = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt(fn(*r)) for _, fn in cols) + " |")
    return "\n".join(out)


def markdown(results: dict) -> str:
    runs = results["runs"]
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs (nproc {m['nproc']}), "
        f"{m['mem_total_mib']} MiB RAM, Linux {m['kernel']}; load average at start "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_start'])}; commit {m['commit']}; {m['date_utc']}.",
        "",
        table(COLUMNS, [(r,) for r in runs]),
        "",
    ]
    frows = [(r, f) for r in runs for f in r["faults"]]
    if frows:
        lines += [table(FAULT_COLUMNS, frows), ""]
    rec = [(r, r["recovery"]) for r in runs if "first_redone_written_s" in r["recovery"]]
    if rec:
        lines += [
            "| run | lost images re-done | first re-done written s after the first fault | last | last re-done → job end s |",
            "|---|---|---|---|---|",
        ]
        for r, x in rec:
            lines.append(
                f"| {r['label']} | {x['redone_images']} (master re-queued {x['lost_images_requeued']}) | "
                f"{fmt(x['first_redone_written_s'])} | {fmt(x['last_redone_written_s'])} | "
                f"{fmt(x['last_redone_before_job_end_s'])} |"
            )
        lines.append("")
    c = runs[0]["correctness"].get("centralized") if runs else None
    if c:
        lines.append(
            f"Reference: `centralized` ({c['mode']}, {c['images']} images) took {fmt(c['wall_s'])} s; "
            f"rows compared per run: {c['compared_rows']}."
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# main


# `--smoke`: a few seconds with both faults (the test in tests/python uses it).
# A short heartbeat timeout so the SIGSTOPped worker is noticed in 1 s, and a
# per-image delay (a hidden worker flag) so the job lasts long enough for
# both faults. Flags given after --smoke win.
SMOKE = [
    "--images", "500", "--workers", "3", "--size", "16x16", "--classes", "5",
    "--corrupt-every", "50", "--kill-at", "0.2", "--stop-at", "0.4", "--stop-hold", "0.2",
    "--master-args", "--heartbeat-timeout 1 --heartbeat-interval 0.2",
    "--worker-args", "--delay-per-image-ms 10",
    "--poll", "0.1", "--rate-window", "0.5", "--timeout", "60",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    if "--smoke" in argv:
        argv = SMOKE + [x for x in argv if x != "--smoke"]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="a few seconds' run with both faults: " + shlex.join(SMOKE))
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--repeat", type=int, default=1, help="runs on the same dataset")
    p.add_argument("--size", default="32x32", help="image size WxH (imgnorm gen --size)")
    p.add_argument("--format", default="mixed", choices=["jpeg", "png", "mixed"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--classes", type=int, default=100, help="sub-folders (ImageFolder layout)")
    p.add_argument("--corrupt-every", type=int, default=500,
                   help="corrupt every N-th file (0: none); default 0.2 %%")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("IMGNORM_LOAD_DATA", Path(tempfile.gettempdir()) / "imgnorm-load")),
                   help="dataset cache (reused between runs); $IMGNORM_LOAD_DATA")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="outputs and logs (default: a fresh temp folder)")
    p.add_argument("--json", type=Path, default=None, help="results file (default WORK/results.json)")
    p.add_argument("--label", default="", help="prefix of the run labels in the table")
    p.add_argument("--master-args", default=os.environ.get("IMGNORM_LOAD_MASTER_ARGS", ""),
                   help="extra `imgnorm master` flags, shell-quoted ($IMGNORM_LOAD_MASTER_ARGS)")
    p.add_argument("--worker-args", default=os.environ.get("IMGNORM_LOAD_WORKER_ARGS", ""),
                   help="extra `imgnorm worker` flags ($IMGNORM_LOAD_WORKER_ARGS)")
    p.add_argument("--fresh-dir", type=Path, action="append", default=[],
                   help="remove this folder before each run (e.g. the master's --data-dir)")
    p.add_argument("--kill-at", type=float, default=0.3,
                   help="SIGKILL a worker when this fraction of images is done (negative: never)")
    p.add_argument("--kill-worker", type=int, default=0)
    p.add_argument("--stop-at", type=float, default=0.6,
                   help="SIGSTOP a worker at this fraction, SIGCONT it once declared dead (negative: never)")
    p.add_argument("--stop-worker", type=int, default=1)
    p.add_argument("--stop-hold", type=float, default=1.0,
                   help="seconds between 'declared dead' and SIGCONT")
    p.add_argument("--fault-timeout", type=float, default=60.0)
    p.add_argument("--poll", type=float, default=0.2, help="seconds between `imgnorm status` polls")
    p.add_argument("--mem-interval", type=float, default=0.1, help="seconds between /proc samples")
    p.add_argument("--rate-window", type=float, default=3.0,
                   help="seconds before/after a fault for the rates around it")
    p.add_argument("--verify", choices=["full", "sample", "none"], default="full",
                   help="compare with `imgnorm centralized` on every image or on a sample")
    p.add_argument("--verify-sample", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds a run may take")
    p.add_argument("--keep", action="store_true", help="keep the outputs (else only logs and manifests)")
    a = p.parse_args(argv)
    if a.kill_at is not None and a.kill_at < 0:
        a.kill_at = None
    if a.stop_at is not None and a.stop_at < 0:
        a.stop_at = None
    for idx in (a.kill_worker, a.stop_worker):
        if not 0 <= idx < a.workers:
            p.error(f"worker index {idx} out of range for --workers {a.workers}")
    if a.kill_at is not None and a.stop_at is not None and a.kill_worker == a.stop_worker:
        p.error("--kill-worker and --stop-worker must differ")
    if a.images < 1 or a.workers < 1:
        p.error("--images and --workers must be positive")
    a.master_args_list = shlex.split(a.master_args)
    a.worker_args_list = shlex.split(a.worker_args)
    return a


def find_binary() -> Path:
    env = os.environ.get("IMGNORM_BIN", "").strip()
    if env:
        b = Path(shutil.which(env) or env)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        b = target / "release" / "imgnorm"
    if not (b.is_file() and os.access(b, os.X_OK)):
        sys.exit(f"load_test: no imgnorm binary at {b} (set IMGNORM_BIN or `cargo build --release -p imgnorm`)")
    return b.resolve()


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    binary = find_binary()
    machine = machine_info(binary)
    a.data_dir.mkdir(parents=True, exist_ok=True)
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="imgnorm-load-run-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load_test: binary {binary}; work {work}", file=sys.stderr)
    inp, files, corrupt, dataset = ensure_dataset(a, binary)
    print(f"load_test: dataset {inp} ({len(files)} files, {len(corrupt)} corrupt, "
          f"{'reused' if dataset['reused'] else 'generated in %.1f s' % dataset['gen_s']})",
          file=sys.stderr)
    results = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "env": {k: os.environ[k] for k in ("IMGNORM_BIN", "IMGNORM_LOAD_MASTER_ARGS",
                                             "IMGNORM_LOAD_WORKER_ARGS") if k in os.environ},
        "machine": machine,
        "dataset": {**dataset, "path": str(inp)},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()
                     if k not in ("master_args_list", "worker_args_list", "fresh_dir")},
        "runs": [],
    }
    ok = True
    for k in range(a.repeat):
        for d in a.fresh_dir:
            shutil.rmtree(d, ignore_errors=True)
        rwork = work / f"run{k + 1}"
        shutil.rmtree(rwork, ignore_errors=True)
        run = Run(a, binary, inp, rwork, len(files))
        load = os.getloadavg()
        print(f"load_test: run {k + 1}/{a.repeat} (load average {load[0]:.2f})", file=sys.stderr)
        try:
            run.start()
            run.inject()
        finally:
            rc = run.wait_end() if run.master else -1
        r = analyse(run, a, rc, files, corrupt)
        r = {"label": f"{a.label}{k + 1}", "images": len(files), "workers": a.workers,
             "loadavg_start": load, "loadavg_end": os.getloadavg(), **r,
             "events": {k2: v for k2, v in run.events.items() if k2 != "faults"},
             "samples": {"status": [{"t": s["t1"], "done": job_done(s) if s["jobs"] else 0,
                                     "workers": {w["worker_id"]: [w["name"], w["state"], w["images_done"], w["leases"]]
                                                 for w in s["workers"]}}
                                    for s in run.status],
                         "mem": run.mem},
             "log_events": run.log_events}
        if rc not in (0, 3):
            r["correctness"]["passed"] = False
            r["correctness"]["problems"].append(f"master exited {rc}")
        ok &= r["correctness"]["passed"]
        results["runs"].append(r)
        for name in ("manifest.jsonl", "provenance.jsonl", "stats.json"):
            if (run.out / name).is_file():
                shutil.copy2(run.out / name, run.logs / name)
        if not a.keep:
            shutil.rmtree(run.out, ignore_errors=True)
        print(f"load_test: run {k + 1}: job {r['time']['job_s']} s, "
              f"{r['throughput']['images_per_s']} images/s, master peak "
              f"{r['memory_mib']['master_peak_vmhwm']} MiB, correct: {r['correctness']['passed']}"
              + ("" if r["correctness"]["passed"] else f" {r['correctness']['problems']}"),
              file=sys.stderr)
    results["machine"]["loadavg_end"] = os.getloadavg()
    md = markdown(results)
    results["markdown"] = md
    out = a.json or work / "results.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(md)
    print(f"\nresults: {out}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
