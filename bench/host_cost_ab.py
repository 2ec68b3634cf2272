"""Host cost before and after a change, in one run: ``python bench/host_cost_ab.py REV``.

Checks REV out into a temporary worktree, then times ``adamw_tau.bench.host_cost.host_cost``
for the CPU backend (1, 52, 148, 2000 tensors; same and new gradients) in alternating
subprocesses, REV then the working tree, ``--rounds`` times, and prints each row's median
over the rounds with the change in percent. Alternating keeps drift in the machine's load
from landing on one side. REV must have the same module layout (adamw_tau.bench.host_cost).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNIPPET = """
import json, torch
torch.set_num_threads(1)
from adamw_tau.bench.host_cost import host_cost
rows = host_cost("cpu", ["ours:cpu"], reps={reps})
print(json.dumps([[r.tensors, r.new_grads, r.ms] for r in rows]))
"""


def measure(root: str, reps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", SNIPPET.format(reps=reps)], env=env, cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return {(n, fresh): ms for n, fresh, ms in json.loads(out.strip().splitlines()[-1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("rev", help="the commit to compare against (before)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = os.path.join(tmp, "before")
        subprocess.run(["git", "-C", HERE, "worktree", "add", "-q", "--detach", old, args.rev], check=True)
        try:
            runs = {"before": [], "after": []}
            for _ in range(args.rounds):
                runs["before"].append(measure(old, args.reps))
                runs["after"].append(measure(HERE, args.reps))
        finally:
            subprocess.run(["git", "-C", HERE, "worktree", "remove", "--force", old], check=True)
    print(f"host cost, ours:cpu, 1 thread, median of {args.rounds} alternating rounds (ms per step)")
    print(f"{'tensors':>8} {'grads':>5} {'before':>9} {'after':>9} {'change':>8}")
    for key in sorted(runs["before"][0]):
        b = statistics.median(r[key] for r in runs["before"])
        a = statistics.median(r[key] for r in runs["after"])
        print(f"{key[0]:8d} {'new' if key[1] else 'same':>5} {b:9.4f} {a:9.4f} {100 * (a / b - 1):+7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
