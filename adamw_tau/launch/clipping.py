"""The global gradient norm of a step and its clipping coefficient, on the gradients' devices.

``clip_scalars`` computes the contract's norm (core/grad_norm.py) of every gradient a step
reads, the coefficient torch's ``clip_grad_norm_`` would apply, and a skip flag (1.0 where the
norm is inf or NaN), all as device tensors: nothing is read back to the host. The AdamW kernels
multiply each unscaled gradient by the coefficient; no pass writes the gradients.

[note: one buffer a device] The gradients of a device are copied, widened to float64, into one
zeroed buffer laid out in whole chunks per gradient (one ``_foreach_copy_``), so the squares and
the chunk trees are a dozen ops a step whatever the tensor count, instead of a dozen a tensor
(2000 tensors: host-bound). The chunk sums are the same bits however the buffer is cut: every op
is element-wise. Its cost: 8 bytes an element of temporary memory during the step.

[note: sharded gradients] A DTensor gradient sharded on dim 0 (FSDP2) has its local shard's
chunk sums on each rank. They are all-gathered (each rank's vector padded to the longest) and
put in the order of one process: per gradient, rank 0's chunks, then rank 1's, and so on. When
every shard but the last holds a whole number of chunks, that is the chunk list one process
makes of the full gradient, so the norm has its bits (tests/optim/test_distributed.py).
"""
from __future__ import annotations

import torch

from ..core import grad_norm
from .sharded_scales import is_dtensor, local

_F64 = torch.float64
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what csrc/grad_norm_cpu.cpp reads


def _cpu_kernel() -> bool:
    """Whether the C++ chunk sums can run: the CPU extension is loaded (the cpu backend loads
    it) and no torch.compile is tracing (the graph keeps the torch ops: the same bits)."""
    if torch.compiler.is_compiling():  # first: Dynamo cannot trace the dispatcher query
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("adamw_tau::chunk_sums", "CPU")
    except RuntimeError:  # the op is not declared: the extension is not loaded
        return False


def _device_sums(grads: list[torch.Tensor], grad_scale: torch.Tensor | None) -> list[torch.Tensor]:
    """Each gradient's chunk sums (float64, on its device), by one buffer per device, or on the
    CPU by the extension's one pass (csrc/grad_norm_cpu.cpp: the same bits, without the buffer)."""
    by_device: dict[torch.device, list[int]] = {}
    for i, g in enumerate(grads):
        by_device.setdefault(g.device, []).append(i)
    out: list = [None] * len(grads)
    for device, idx in by_device.items():
        sizes, n_chunks = [], []
        for i in idx:
            n = grads[i].numel()
            padded = grad_norm.padded_numel(n)
            sizes += [n, padded - n]
            n_chunks.append(padded // grad_norm.CHUNK)
        if device.type == "cpu" and _cpu_kernel() and all(grads[i].dtype in _KERNEL_DTYPES for i in idx):
            sums = torch.ops.adamw_tau.chunk_sums([grads[i] for i in idx], grad_scale)
            for i, s in zip(idx, sums.split(n_chunks)):
                out[i] = s
            continue
        buf = torch.zeros(sum(sizes), dtype=_F64, device=device)
        torch._foreach_copy_(list(buf.split(sizes)[0::2]), [grads[i].reshape(-1) for i in idx])
        sums = grad_norm.chunk_sums(grad_norm.squares(buf, grad_scale))
        for i, s in zip(idx, sums.split(n_chunks)):
            out[i] = s
    return out


def _shard_chunks(g, world: int) -> list[int]:
    """The chunk count of each rank's shard of DTensor ``g`` (Shard(0): torch.chunk's split of the
    rows), from shapes alone: no message, no sync."""
    rows, per = g.shape[0], -(-g.shape[0] // world)
    row_numel = g.numel() // rows if rows else 0
    return [grad_norm.padded_numel(max(0, min(per, rows - r * per)) * row_numel) // grad_norm.CHUNK
            for r in range(world)]


def _gathered(grads: list, sums: list[torch.Tensor], group) -> list[torch.Tensor]:
    """Sharded gradients' local chunk sums -> the full gradients' chunk sums, in rank order."""
    import torch.distributed as dist
    world = dist.get_world_size(group)
    mine = torch.cat(sums)
    per_grad = [_shard_chunks(g, world) for g in grads]
    all_counts = [[c[r] for c in per_grad] for r in range(world)]
    longest = max(sum(c) for c in all_counts)
    padded = torch.nn.functional.pad(mine, (0, longest - mine.numel()))
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    pieces = [p[:sum(c)].split(c) for p, c in zip(parts, all_counts)]
    return [torch.cat([pieces[r][j] for r in range(world)]) for j in range(len(sums))]


def _shard_group(g):
    """The process group a DTensor gradient is sharded over, or None (replicated or local)."""
    if not is_dtensor(g):
        return None
    from torch.distributed.tensor.placement_types import Shard
    if not any(isinstance(p, Shard) for p in g.placements):
        return None
    if any(isinstance(p, Shard) and p.dim != 0 for p in g.placements) or g.device_mesh.ndim != 1:
        raise NotImplementedError("AdamWTau(max_grad_norm=...): gradients sharded other than on dim 0 of a 1-d "
                                  "mesh (FSDP2's layout) are not supported; clip with torch.nn.utils.clip_grad_norm_")
    return g.device_mesh.get_group()


def all_chunk_sums(grads: list[torch.Tensor], grad_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Every chunk sum of ``grads`` (float64, DTensors by their full tensors), in one process's
    order, on the first gradient's device: what the norm's last tree sums."""
    groups = [_shard_group(g) for g in grads]
    sums = _device_sums([local(g) if is_dtensor(g) else g for g in grads], grad_scale)
    sharded = [i for i, pg in enumerate(groups) if pg is not None]
    if sharded:
        full = _gathered([grads[i] for i in sharded], [sums[i] for i in sharded], groups[sharded[0]])
        for i, s in zip(sharded, full):
            sums[i] = s
    device = local(grads[0]).device if is_dtensor(grads[0]) else grads[0].device
    return torch.cat([s.to(device, non_blocking=True) for s in sums])


def total_norm(grads: list[torch.Tensor], grad_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The contract's fp32 norm of ``grads`` (in order; DTensors by their full tensors), on the
    first gradient's device, unscaled by ``grad_scale`` first when given."""
    if not grads:
        return torch.zeros((), dtype=torch.float32)
    return grad_norm.norm_of_sums(all_chunk_sums(grads, grad_scale))


def clip_scalars(grads: list[torch.Tensor], max_norm: float, grad_scale: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(norm, coefficient, skip): the fp32 norm, torch's clipping coefficient for it, and 1.0
    where the norm is not finite (the step is then skipped as a GradScaler skips it), else 0.0."""
    norm = total_norm(grads, grad_scale)
    skip = (~torch.isfinite(norm)).to(torch.float32)
    return norm, grad_norm.clip_coef(norm, max_norm), skip


def clip_step(flat: list[torch.Tensor | None], max_norm: float, grad_scale: torch.Tensor | None,
              found_inf: torch.Tensor | None, norm_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A clipping step's (coefficient, found_inf): the norm of the gradients in ``flat`` (None for
    a parameter without one) written into ``norm_out`` (opt.grad_norm), and found_inf with the
    skip flag added, so that a non-finite norm skips the step as a GradScaler's inf does."""
    norm, coef, skip = clip_scalars([g for g in flat if g is not None], max_norm, grad_scale)
    norm_out.copy_(norm)
    return coef, skip if found_inf is None else found_inf.to(skip.device, torch.float32) + skip


def norm_holder(param_groups) -> torch.Tensor:
    """The tensor a clipping optimizer writes each step's norm into: fp32, NaN until the first
    step, on the first parameter's device (its local shard's for a DTensor)."""
    p = param_groups[0]["params"][0]
    device = local(p).device if is_dtensor(p) else p.device
    return torch.full((), float("nan"), dtype=torch.float32, device=device)
