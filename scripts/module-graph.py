#!/usr/bin/env python3
"""Checks the workspace's layering (see README, "Where things live"):

- on the crate graph (`cargo metadata`): no crate depends on a crate of a
  later layer, and crates that must stay apart (master, worker) do not depend
  on each other; every workspace crate has a layer;
- inside each crate split from the old runtime crate: its top-level modules
  import one another without circles. Reads `crate::` paths outside `#[cfg(test)] mod tests` blocks; doc
  links count too.

    scripts/module-graph.py            # check; prints offending edges, exit 1
    scripts/module-graph.py --edges    # print both graphs
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# Lowest first. A crate may depend on crates of its own layer or below (cargo
# itself forbids circles).
LAYERS = [
    # pure logic, and the protocol's generated code
    ["imgnorm-core", "imgnorm-proto"],
    # engine: files in, arrays and datasets out (no network)
    ["imgnorm-engine"],
    # the wire and the transport both sides share
    ["imgnorm-net"],
    # the two runtimes; neither depends on the other
    ["imgnorm-master", "imgnorm-worker"],
    # operating a cluster: process launch, autoscaler, metrics, dashboard, the
    # shared flags and their conversion to domain options, the app wiring
    ["imgnorm-app"],
    # tools that are not the product (benchmark, generator, demo, fuzz bodies)
    ["imgnorm-tools"],
    # the command line and the binary over everything
    ["imgnorm"],
]
# Crates of the same layer that must not depend on each other.
APART = [("imgnorm-master", "imgnorm-worker")]
# Crates whose modules are not checked for circles: the pure core's modules
# link to one another in doc comments (options <-> dataset), and it is one
# crate by design; the proto crate is generated code.
NO_MODULE_CHECK = {"imgnorm-core", "imgnorm-proto"}


def crate_graph():
    """Workspace crates -> {(dependency, kind)} between workspace crates."""
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
    )
    pkgs = {p["name"]: p for p in meta["packages"]}
    g = {}
    for name, p in pkgs.items():
        g[name] = {
            (d["name"], d["kind"] or "normal")
            for d in p["dependencies"]
            if d["name"] in pkgs
        }
    src = {name: os.path.join(os.path.dirname(p["manifest_path"]), "src") for name, p in pkgs.items()}
    return g, src


def modules(root):
    found = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            if rel.startswith("bin" + os.sep) or rel in ("lib.rs", "main.rs"):
                continue
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith(".rs") else top
            found.setdefault(top, []).append(os.path.join(dirpath, f))
    return found


def module_edges(mods):
    out = {m: set() for m in mods}
    for m, paths in mods.items():
        for p in paths:
            src = open(p, encoding="utf-8").read()
            cut = src.find("#[cfg(test)]\nmod tests")
            if cut >= 0:
                src = src[:cut]
            for t in re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", src):
                if t in mods and t != m:
                    out[m].add(t)
    return out


def cycles(g):
    index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return comps


def main():
    crates, srcdirs = crate_graph()
    mods = {c: modules(srcdirs[c]) for c in crates}
    medges = {c: module_edges(ms) for c, ms in mods.items()}
    if "--edges" in sys.argv:
        for c in sorted(crates):
            deps = sorted(f"{d}" if k == "normal" else f"{d}({k})" for d, k in crates[c])
            print(f"{c} -> {' '.join(deps)}")
        for c in sorted(medges):
            for m in sorted(medges[c]):
                print(f"  {c}::{m} -> {' '.join(sorted(medges[c][m]))}")
        return 0
    layer = {c: i for i, cs in enumerate(LAYERS) for c in cs}
    bad = []
    for c in sorted(crates):
        if c not in layer:
            bad.append(f"crate {c} has no layer in scripts/module-graph.py")
    for c in sorted(crates):
        for d, kind in sorted(crates[c]):
            if c in layer and d in layer and layer[d] > layer[c]:
                bad.append(f"{c} (layer {layer[c]}) depends on {d} (layer {layer[d]}, {kind})")
            if (c, d) in APART or (d, c) in APART:
                bad.append(f"{c} depends on {d}: they must stay apart")
    for c in sorted(medges):
        if c in NO_MODULE_CHECK:
            continue
        for cyc in cycles(medges[c]):
            bad.append(f"import circle in {c}: " + " ".join(cyc))
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
