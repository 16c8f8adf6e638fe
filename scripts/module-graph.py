#!/usr/bin/env python3
"""Checks that crates/imgnorm's top-level modules import one another without
circles, and that no module imports one of a higher layer (see README, "Where
things live"). Reads `crate::` and `super::` paths outside `#[cfg(test)] mod
tests` blocks; doc links count too, since after a split into crates they would
point upward as well.

    scripts/module-graph.py            # check; prints offending edges, exit 1
    scripts/module-graph.py --edges    # print the whole graph
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "imgnorm", "src")

# Lowest first. A module may import modules of its own layer or below; within a
# layer the graph must still be acyclic. Each layer is meant to become a crate.
LAYERS = [
    # engine: files in, arrays and datasets out (no network)
    ["fsio", "budget", "decode", "jpeg", "tiles", "claim", "discovery", "storage",
     "formats", "engine", "output", "finish", "progress", "centralized"],
    # the wire and the transport both sides share
    ["wire", "limits", "host", "security", "health", "shutdown"],
    # the two runtimes; neither imports the other
    ["master", "worker"],
    # operating a cluster: process launch, autoscaler, metrics, dashboard, the
    # shared flags and their conversion to domain options, the app wiring
    ["launch", "autoscale", "metrics", "args", "http", "app"],
    # tools that are not the product (benchmark, generator, demo, fuzz bodies)
    ["synth", "bench", "fuzzing", "demo"],
    # the command line over everything (with src/bin/imgnorm.rs)
    ["cli"],
]
# Modules of the same layer that must not import each other.
APART = [("master", "worker")]


def modules():
    found = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
            if rel.startswith("bin" + os.sep) or rel == "lib.rs":
                continue
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith(".rs") else top
            found.setdefault(top, []).append(os.path.join(dirpath, f))
    return found


def edges(mods):
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
    mods = modules()
    g = edges(mods)
    if "--edges" in sys.argv:
        for m in sorted(g):
            print(f"{m} -> {' '.join(sorted(g[m]))}")
        return 0
    layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}
    bad = []
    for m in sorted(mods):
        if m not in layer:
            bad.append(f"module {m} has no layer in scripts/module-graph.py")
    for m in sorted(g):
        for t in sorted(g[m]):
            if m in layer and t in layer and layer[t] > layer[m]:
                bad.append(f"{m} (layer {layer[m]}) imports {t} (layer {layer[t]})")
            if (m, t) in APART or (t, m) in APART:
                bad.append(f"{m} imports {t}: they must stay apart")
    for c in cycles(g):
        bad.append("import circle: " + " ".join(c))
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
