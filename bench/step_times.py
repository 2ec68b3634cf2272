"""The median step time of ours:cpu on one workload, path by path, one line each: the loop behind
the back-to-back tables in bench/RESULTS.md (run it from two trees in turn: a checkout of the
older commit on PYTHONPATH with its own TORCH_EXTENSIONS_DIR, then this one).

    python bench/step_times.py 16M fp32,fp32_8bit,fp32_4bit
    python bench/step_times.py gpt2 fp32,bf16_remainder_8bit
"""
import sys

import torch

from adamw_tau.bench.timing import time_ms
from adamw_tau.bench.workloads import gpt2_124m_shapes, make_optimizer, make_params
from adamw_tau.testing.parity import PATHS


def main(argv: list[str]) -> None:
    workload = argv[0] if argv else "16M"
    paths = argv[1].split(",") if len(argv) > 1 else ["fp32", "fp32_8bit", "fp32_4bit"]
    shapes = {"16M": [(2 ** 24,)], "gpt2": gpt2_124m_shapes()}[workload]
    torch.manual_seed(0)
    for name in paths:
        params = make_params(shapes, PATHS[name], "cpu")
        opt = make_optimizer("ours:cpu", params, PATHS[name])
        print(f"{workload} {name:24s} {time_ms(opt.step, 'cpu', 7, 2, 2.0):8.1f} ms", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
