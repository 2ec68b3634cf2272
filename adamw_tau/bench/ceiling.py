"""The bytes a step moves, by how it moves them, and the CPU ceiling for moving them so.

[note: the CPU ceiling] A step reads its gradients and reads and writes back its params and
states: on the CPU, reads are cheaper than writes (a written line is first read for ownership,
then written back), so the ceiling for a step's bytes depends on its mix. An in-place stream
(x *= c) over the step's byte count is half reads; the fp32 step is 16 bytes read for 12
written, and rows beat that ceiling (101-110% on the GPT-2 rows of the 2-core machine, torch
fused included). Separate passes (a read-write one, a read-only one for the gradients) are no
ceiling either: on the loaded 2-core machine bench/cpu_stream.cpp's one-pass update took 178 ms
(best of 5) where the same bytes in a read-write and a read-only pass took 228, more streams in
flight at once. So the ceiling is one pass shaped like the step: the extension's stream_pass
(csrc/stream_cpu.cpp) runs at::parallel_for over blocks of 4096 parameter elements, as the CPU
op does, each block touching its share of a buffer per role of the step (params, gradients,
each state key) in rounds of a piece of every buffer, so that all the streams are in flight at
once as in the step's element loop (csrc/stream_cpu.cpp has the measurements): read and
written back, read, or written as the step does, with no math.

The bytes come from the path and the workload's shapes through the format registry
(``path_streams``: which format each tensor's moments take, the master form), and the same
count is read off a stepped optimizer's real tensors (``step_streams``); the tests hold the
two equal for every path. The GPU's roofline stays a device copy (timing.copy_ms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..formats import registry
from ..testing.parity import Path
from .timing import time_ms

# the state keys a step reads and writes back: every format's moments (codes and scales for
# quantized ones) and the masters
STATE_KEYS = frozenset({k for f in registry.STATE_FORMATS.values() for m in registry.MOMENTS for k in f.keys(m)} |
                       {m.key for m in registry.MASTER_FORMS.values() if m.key})


MODES = ("rw", "ro", "wo")  # read and written back, only read, only written


@dataclass(frozen=True)
class Streams:
    """A step's bytes by buffer: ``(role, mode, bytes)`` for the params, the gradients and each
    state key, summed over the step's tensors, in role order."""
    buffers: tuple = ()

    def total(self, mode: str) -> int:
        return sum(b for _, m, b in self.buffers if m == mode)

    @property
    def rw(self) -> int:
        return self.total("rw")

    @property
    def ro(self) -> int:
        return self.total("ro")

    @property
    def wo(self) -> int:
        return self.total("wo")

    @property
    def moved(self) -> int:
        """Bytes moved: a read-write byte counts twice (read once, written once)."""
        return 2 * self.rw + self.ro + self.wo

    def __add__(self, other: Streams) -> Streams:
        merged = {(r, m): 0 for r, m, _ in self.buffers + other.buffers}
        for r, m, b in self.buffers + other.buffers:
            merged[(r, m)] += b
        return Streams(tuple(sorted((r, m, b) for (r, m), b in merged.items())))


def _streams(**roles) -> Streams:
    """Streams from role=(mode, bytes) pairs (a state key's role may hold a dot: passed as a dict)."""
    return Streams(tuple(sorted((r, m, b) for r, (m, b) in roles.items() if b)))


def tensor_streams(path: Path, numel: int, amsgrad: bool = False,
                   min_quantized_numel: int = registry.MIN_QUANTIZED_NUMEL) -> Streams:
    """The streams of one parameter of ``numel`` elements on ``path``: its gradient read; its
    moments (in the format the registry picks for that size: values, or codes and scales) and
    master read and written; the param read and written, or only written behind an fp32 master."""
    master = registry.MASTER_FORMS[registry.FP32_MASTER.id if path.master is True else
                                   registry.REMAINDER_MASTER.id if path.master == "remainder" else
                                   registry.NO_MASTER.id]
    p = numel * path.param_dtype.itemsize
    group = {"state_dtype": path.state_dtype, "min_quantized_numel": min_quantized_numel}
    fmt = registry.select(group, torch.empty(numel, device="meta"), master.id)
    roles = {"param": ("wo" if master is registry.FP32_MASTER else "rw", p), "grad": ("ro", p)}
    for moment in registry.MOMENTS[:3 if amsgrad else 2]:
        if fmt.quantized:
            roles[fmt.key(moment)] = ("rw", math.ceil(numel * fmt.codec.BITS / 8))
            roles[fmt.scale_key(moment)] = ("rw", 4 * fmt.n_blocks(numel))
        else:
            roles[moment] = ("rw", numel * fmt.dtype.itemsize)
    if master.key is not None:
        roles[master.key] = ("rw", numel * master.dtype.itemsize)
    return _streams(**roles)


def path_streams(path: Path, shapes, amsgrad: bool = False) -> Streams:
    """The streams of one step of ``path`` over a workload's shapes (gradients in the param's dtype)."""
    total = Streams()
    for s in shapes:
        total = total + tensor_streams(path, math.prod(s), amsgrad)
    return total


def step_streams(opt: torch.optim.Optimizer) -> Streams:
    """The same count read off a stepped optimizer: every gradient read, every state tensor under
    STATE_KEYS read and written, each param read and written, or only written where an fp32
    master holds the weight."""
    total = Streams()
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = opt.state.get(p, {})
            master = isinstance(state.get(registry.FP32_MASTER.key), torch.Tensor)
            roles = {k: ("rw", t.nbytes) for k, t in state.items() if k in STATE_KEYS and isinstance(t, torch.Tensor)}
            roles.update(param=("wo" if master else "rw", p.nbytes), grad=("ro", p.grad.nbytes))
            total = total + _streams(**roles)
    return total


def ceiling_ms(streams: Streams, numel: int, reps: int, warmup: int, budget_s: float | None = 1.0) -> float:
    """Milliseconds for the CPU to move ``streams`` of a step over ``numel`` parameters the step's
    way ([note: the CPU ceiling]): one pass of the extension's stream_pass over a buffer per
    role, each block of 4096 parameter elements touching its share of every buffer at once, on
    torch's threads, as the CPU op steps a bucket. The fastest of the timed passes: the rows are
    medians, and on a shared machine a median pass is slowed by the load it meets."""
    from ..launch import extension
    extension.load(cuda=False)
    op = torch.ops.adamw_tau.stream_pass
    buffers = {m: [torch.zeros(b, dtype=torch.uint8) for _, mode, b in streams.buffers if mode == m] for m in MODES}
    return time_ms(lambda: op(buffers["rw"], buffers["ro"], buffers["wo"], max(1, numel), 0), "cpu", reps, warmup,
                   budget_s, best=True)
