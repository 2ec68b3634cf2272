"""The bytes a step moves, by how it moves them, and the CPU ceiling for moving them so.

[note: the CPU ceiling] A step reads its gradients and reads and writes back its params and
states: on the CPU, reads are cheaper than writes (a written line is first read for ownership,
then written back), so the ceiling for a step's bytes depends on its mix. An in-place stream
(x *= c) over the step's byte count is half reads and half writes; the fp32 step is 16 bytes
read for 12 written, and rows beat that ceiling (101-110% on the GPT-2 rows of the 2-core
machine, torch fused included). The ceiling here moves each path's own bytes the step's way,
on the step's threads (torch's intra-op threads, which the C++ op's OpenMP loop and torch's
kernels both use): a read-write pass (``x.mul_(1.0)``) over the bytes the step reads and writes
back, a read-only pass (``x.sum()``) over the gradients, and a write-only pass (``x.fill_``)
over params only written (behind an fp32 master), timed one after another and added.

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


@dataclass(frozen=True)
class Streams:
    """A step's bytes by access: read and written back, only read, only written."""
    rw: int = 0
    ro: int = 0
    wo: int = 0

    @property
    def moved(self) -> int:
        """Bytes moved: a read-write byte counts twice (read once, written once)."""
        return 2 * self.rw + self.ro + self.wo

    def __add__(self, other: Streams) -> Streams:
        return Streams(self.rw + other.rw, self.ro + other.ro, self.wo + other.wo)


def _moment_bytes(fmt: registry.StateFormat, numel: int) -> int:
    """One moment's bytes in ``fmt`` for a tensor of ``numel`` elements: values, or codes and scales."""
    if not fmt.quantized:
        return numel * fmt.dtype.itemsize
    return math.ceil(numel * fmt.codec.BITS / 8) + 4 * fmt.n_blocks(numel)


def tensor_streams(path: Path, numel: int, amsgrad: bool = False,
                   min_quantized_numel: int = registry.MIN_QUANTIZED_NUMEL) -> Streams:
    """The streams of one parameter of ``numel`` elements on ``path``: its gradient read; its
    moments (in the format the registry picks for that size) and master read and written; the
    param read and written, or only written behind an fp32 master."""
    master = registry.MASTER_FORMS[registry.FP32_MASTER.id if path.master is True else
                                   registry.REMAINDER_MASTER.id if path.master == "remainder" else
                                   registry.NO_MASTER.id]
    p = numel * path.param_dtype.itemsize
    group = {"state_dtype": path.state_dtype, "min_quantized_numel": min_quantized_numel}
    fmt = registry.select(group, torch.empty(numel, device="meta"), master.id)
    moments = (3 if amsgrad else 2) * _moment_bytes(fmt, numel)
    master_bytes = numel * master.dtype.itemsize if master.dtype is not None else 0
    if master is registry.FP32_MASTER:
        return Streams(rw=moments + master_bytes, ro=p, wo=p)
    return Streams(rw=moments + master_bytes + p, ro=p)


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
            states = sum(t.nbytes for k, t in state.items() if k in STATE_KEYS and isinstance(t, torch.Tensor))
            if isinstance(state.get(registry.FP32_MASTER.key), torch.Tensor):
                total = total + Streams(rw=states, ro=p.grad.nbytes, wo=p.nbytes)
            else:
                total = total + Streams(rw=states + p.nbytes, ro=p.grad.nbytes)
    return total


def ceiling_ms(streams: Streams, reps: int, warmup: int, budget_s: float | None = 1.0) -> float:
    """Milliseconds for the CPU to move ``streams`` the step's way ([note: the CPU ceiling]): a
    read-write pass, a read-only pass and a write-only pass over buffers of those sizes, each
    timed (median) and added."""
    passes = (("rw", lambda x: x.mul_(1.0)), ("ro", lambda x: x.sum()), ("wo", lambda x: x.fill_(1.0)))
    total = 0.0
    for name, op in passes:
        nbytes = getattr(streams, name)
        if nbytes:
            buf = torch.ones(max(1, nbytes // 4))
            total += time_ms(lambda: op(buf), "cpu", reps, warmup, budget_s)
            del buf
    return total
