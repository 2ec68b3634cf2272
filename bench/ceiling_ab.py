"""The CPU ceiling beside the step, GPT-2-124M shapes, one path after another (bench/RESULTS.md,
2026-12-03): ours:cpu (and torch fused on fp32) step medians, the ceiling's best pass
(adamw_tau/bench/ceiling.py) and the old in-place stream of the same bytes, twice for fp32.

    python bench/ceiling_ab.py fp32 fp32_8bit   # paths of adamw_tau.testing.parity.PATHS
"""
import math
import subprocess
import sys

import torch

from adamw_tau.bench import ceiling, workloads
from adamw_tau.bench.timing import time_ms
from adamw_tau.testing.parity import PATHS


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(names) -> None:
    shapes = workloads.gpt2_124m_shapes()
    numel = sum(math.prod(s) for s in shapes)
    print(uptime(), "threads", torch.get_num_threads())
    for name in names:
        path = PATHS[name]
        impls = ["ours:cpu"] + (["torch:fused"] if name == "fp32" else [])
        streams = ceiling.path_streams(path, shapes)
        for _ in range(2 if name == "fp32" else 1):
            row = []
            for impl in impls:
                params = workloads.make_params(shapes, path, "cpu")
                opt = workloads.make_optimizer(impl, params, path)
                row.append((impl, time_ms(opt.step, "cpu", 7, 1, 4.0)))
                del opt, params
            c = ceiling.ceiling_ms(streams, numel, 7, 1, 4.0)
            buf = torch.rand(max(1, streams.moved // 2 // 4))
            old = time_ms(lambda: buf.mul_(1.0), "cpu", 7, 1, 4.0)
            del buf
            print(f"{name:18s} B/param {streams.moved / numel:6.2f}  ceiling {c:8.1f} ms  old stream {old:8.1f} ms  " +
                  "  ".join(f"{i} {ms:8.1f} ms ({100 * c / ms:5.1f}% ceiling, {100 * old / ms:5.1f}% old)"
                            for i, ms in row), flush=True)
    print(uptime())


if __name__ == "__main__":
    main(sys.argv[1:])
