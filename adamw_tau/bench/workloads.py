"""The bench's workloads: model shapes, dtype paths, the bytes a step must move, and the
optimizers it times (ours and torch's), shared by the bandwidth and host-cost tables."""
from __future__ import annotations

import math

import torch

from ..launch import backends
from ..optim.optimizer import AdamWTau
from ..testing.parity import Path


def gpt2_shapes(d: int, vocab: int, ctx: int, layers: int) -> list[tuple]:
    """GPT-2's parameters in transformers' order (Conv1D weights stored (in, out))."""
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def gpt2_124m_shapes() -> list[tuple]:
    return gpt2_shapes(d=768, vocab=50257, ctx=1024, layers=12)


def llama_1b_shapes() -> list[tuple]:
    d, ff, kv, v, layers = 2048, 8192, 512, 128256, 16
    shapes = [(v, d)]
    for _ in range(layers):
        shapes += [(d, d), (kv, d), (kv, d), (d, d), (ff, d), (ff, d), (d, ff), (d,), (d,)]
    return shapes + [(d,)]


def workloads(device: str, quick: bool) -> dict[str, list[tuple]]:
    if device == "cuda":
        w = {"one_large_268M": [(2 ** 28,)], "gpt2_124m": gpt2_124m_shapes(), "llama_1b": llama_1b_shapes(),
             "small_2000x4096": [(4096,)] * 2000}
        if quick:
            w.pop("llama_1b")
        return w
    w = {"one_large_16M": [(2 ** 24,)], "gpt2_124m": gpt2_124m_shapes(), "small_2000x4096": [(4096,)] * 2000}
    if quick:
        w = {"one_large_4M": [(2 ** 22,)], "gpt2_124m": gpt2_124m_shapes(), "small_2000x4096": [(4096,)] * 2000}
    return w


BENCH_PATHS = ("fp32", "bf16_master", "bf16_remainder", "bf16_states", "fp32_8bit", "bf16_master_8bit",
               "bf16_remainder_8bit", "fp32_4bit", "bf16_master_4bit", "bf16_remainder_4bit")
# Left out of the default CPU bench, run with --path: the quantized paths are still slower than
# fp32 on the 2-core CPU machine (16M elements: 8-bit about 1.8x the fp32 step, 4-bit 1.5x;
# 2026-12-03, README's memory section), and their 18 more rows would take the README's main job
# past 3 minutes on a fresh machine. On a GPU every path runs by default.
CPU_OPT_IN_PATHS = ("fp32_8bit", "bf16_master_8bit", "bf16_remainder_8bit", "fp32_4bit", "bf16_master_4bit",
                    "bf16_remainder_4bit")


def default_paths(device: str) -> tuple:
    return tuple(p for p in BENCH_PATHS if device == "cuda" or p not in CPU_OPT_IN_PATHS)


def bytes_per_element(path: Path, amsgrad: bool = False) -> int:
    """Bytes one step moves per parameter: a whole number, except for 8-bit states, whose
    codes move with one fp32 scale per 256 of them (1 + 4/256 bytes a state element)."""
    p = path.param_dtype.itemsize
    fmt = path.format
    s = fmt.codec.BITS / 8 + 4 / fmt.block if fmt.quantized else path.state_dtype.itemsize
    n = p + p  # grad read + param written
    if path.master == "remainder":
        n += p + 2 * 2  # param read (the master's high half), remainder read and written
    else:
        n += 2 * 4 if path.master else p  # master read and written, or param read
    n += 2 * 2 * s + (2 * s if amsgrad else 0)
    return n


def make_params(shapes, path: Path, device: str, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, device=device, generator=gen).to(path.param_dtype).requires_grad_()
        p.grad = (torch.randn(s, device=device, generator=gen) * 1e-2).to(path.param_dtype)
        params.append(p)
    return params


def make_optimizer(impl: str, params, path: Path, **options):
    """impl: 'ours:<backend>' or 'torch:<for-loop|foreach|fused>'; ``options``: AdamWTau's others."""
    kind, name = impl.split(":")
    if kind == "ours":
        return AdamWTau(params, lr=1e-3, tau_iters=1000.0, backend=name, master_weights=path.master,
                        state_dtype=path.state_dtype, **options)
    flags = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[name]
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1.0, **flags)


def torch_supports(path: Path) -> bool:
    """torch.optim.AdamW keeps states in the param's dtype and has no master weights."""
    return not path.master and path.state_dtype == path.param_dtype


def our_backends(device: str) -> list[str]:
    names = ["triton", "cuda"] if device == "cuda" else ["cpu"]
    return [n for n in names if backends.availability(n, torch.device(device)) is None]


def parity_sizes(shapes) -> list[int]:
    """The workload's tensor sizes capped (64 tensors, 65,537 elements each) so the float64
    reference stays quick; odd sizes kept, since tails are where kernels go wrong."""
    return [min(math.prod(s), 65_537) for s in shapes[:64]]
