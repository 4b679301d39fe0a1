#!/usr/bin/env python3
"""Solve the ledger benchmark's audit problem with HiGHS and compare.

Usage: cargo bench --bench ledger -- /tmp/ledger.json
       python3 benches/ledger_highs.py /tmp/ledger.json

Reads the problem the Rust benchmark wrote (finest cells, one constraint
lo <= sum <= hi per released cell and known figure, and every objective
with the interval the Rust audit found), solves min and max of every
objective as an integer programme with HiGHS (pip install highspy), each
connected component on its own as the Rust audit does, checks the
intervals are equal, and prints the time and its ratio to Rust's.
"""

import json
import sys
import time

import highspy
import numpy as np


def components(n, constraints):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for c in constraints:
        cells = c["cells"]
        for j in cells[1:]:
            a, b = find(cells[0]), find(j)
            if a != b:
                parent[b] = a
    return [find(j) for j in range(n)]


def model(cells, rows):
    """A HiGHS model over the component's cells with its constraints."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    local = {j: i for i, j in enumerate(cells)}
    inf = highspy.kHighsInf
    for _ in cells:
        h.addVar(0.0, inf)
    h.changeColsIntegrality(
        len(cells),
        np.arange(len(cells), dtype=np.int32),
        np.array([highspy.HighsVarType.kInteger] * len(cells)),
    )
    for c in rows:
        idx = np.array([local[j] for j in c["cells"]], dtype=np.int32)
        h.addRow(float(c["lo"]), float(c["hi"]), len(idx), idx, np.ones(len(idx)))
    return h, local


def optimum(h, local, objective, sense):
    n = len(local)
    cost = np.zeros(n)
    for j in objective:
        cost[local[j]] = 1.0
    h.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
    h.changeObjectiveSense(sense)
    h.run()
    return round(h.getInfo().objective_function_value)


def main():
    problem = json.load(open(sys.argv[1]))
    n = problem["cells"]
    constraints = problem["constraints"]
    root = components(n, constraints)
    start = time.perf_counter()
    by_comp = {}
    for c in constraints:
        by_comp.setdefault(root[c["cells"][0]], []).append(c)
    models = {}
    mismatches = 0
    for o in problem["objectives"]:
        parts = {}
        for j in o["cells"]:
            parts.setdefault(root[j], []).append(j)
        lo = hi = 0
        for comp, cells in parts.items():
            if comp not in models:
                members = [j for j in range(n) if root[j] == comp]
                models[comp] = model(members, by_comp[comp])
            h, local = models[comp]
            lo += optimum(h, local, cells, highspy.ObjSense.kMinimize)
            hi += optimum(h, local, cells, highspy.ObjSense.kMaximize)
        if (lo, hi) != (o["lo"], o["hi"]):
            mismatches += 1
            if mismatches <= 5:
                print(f"mismatch: HiGHS {lo}..{hi}, Rust {o['lo']}..{o['hi']}")
    elapsed = (time.perf_counter() - start) * 1e3
    print(f"HiGHS: {len(problem['objectives'])} objectives, {2 * len(problem['objectives'])} MIPs in {elapsed:.1f} ms; "
          f"Rust full audit {problem['rust_full_ms']:.1f} ms; ratio HiGHS/Rust {elapsed / problem['rust_full_ms']:.2f}")
    print("intervals equal" if mismatches == 0 else f"{mismatches} intervals differ")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
