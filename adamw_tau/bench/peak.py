"""The peak of one training step: the largest number of bytes the parameters, their gradients
and the optimizer hold at any point of a backward and step, counted from the live tensors.

[note: what the peak counts] ``ledger.count`` (distinct storages: params, grads, every
``opt.state`` entry, whatever else the optimizer reaches) is taken after the forward, at every
parameter's post-accumulate-grad hook (registered after the optimizer's, so a gradient the
optimizer freed is gone), and after ``opt.step()``; at each hook also the instant before the
optimizer's hook ran: what the previous count held plus the parameter's new gradient, which
then existed even if a step inside backward has freed it since (the largest gradient is
always part of the peak). Activations and autograd's transient
buffers are not counted: they belong to the model, and are the same with either step. With
the ordinary step the peak is at the end of backward, every gradient alive; with
``step_in_backward`` only the gradients still waiting for their bucket are.

The model is a chain over the given shapes, ``sum_i sum(p_i * c_i)``: each parameter gets a
full gradient, in reverse order, as a real backward gives them.
"""
from __future__ import annotations

import torch

from ..optim.optimizer import AdamWTau
from .ledger import Ledger, count


def chain_loss(params) -> torch.Tensor:
    """A loss whose backward makes a full gradient for every parameter, the last one first."""
    loss = torch.zeros((), dtype=torch.float32)
    for i, p in enumerate(params):
        loss = loss + (p.float() * (1.0 + i % 7) * 1e-3).sum()
    return loss


def peak(params, opt, backward) -> Ledger:
    """The largest ledger seen while ``backward()`` runs and ``opt.step()`` follows."""
    best, last = [], []

    def keep(ledger):
        if not best or sum(ledger.bytes.values()) > sum(best[0].bytes.values()):
            best[:] = [ledger]

    def look(p=None):
        if p is not None and last:
            # the instant before the optimizer's hook ran: all that was alive at the last look,
            # and p's new gradient (a step inside backward has freed it by now)
            before = Ledger(bytes=dict(last[0].bytes))
            before.bytes["grads"] += p.numel() * p.element_size() if p.grad is None else 0
            keep(before)
        ledger = count(params, opt)
        last[:] = [ledger]
        keep(ledger)
    handles = [p.register_post_accumulate_grad_hook(look) for p in params if p.requires_grad]
    try:
        look()
        backward()
        look()
        opt.step()
        look()
    finally:
        for h in handles:
            h.remove()
    return best[0]


def peak_of_a_training_step(params, opt) -> tuple[Ledger, int | None]:
    """The peak of the second of two training steps of ``chain_loss`` (the first makes the
    states), and on a GPU the allocator's peak over that step (``max_memory_allocated``: all
    that is allocated, activations and autograd's buffers included), in bytes."""
    chain_loss(params).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    cuda = params[0].is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ledger = peak(params, opt, lambda: chain_loss(params).backward())
    opt.zero_grad(set_to_none=True)
    return ledger, (torch.cuda.max_memory_allocated() if cuda else None)


def peak_bytes_per_param(shapes, dtype=torch.bfloat16, step_in_backward: bool = False, steps: int = 2,
                         **options) -> dict:
    """Bytes per parameter at the peak of the last of ``steps`` training steps (states exist from
    the first), by category, on parameters of ``shapes``."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes]
    opt = AdamWTau(params, step_in_backward=step_in_backward, **options)
    for _ in range(steps - 1):
        chain_loss(params).backward()
        opt.step()
        opt.zero_grad()
    ledger = peak(params, opt, lambda: chain_loss(params).backward())
    n = sum(p.numel() for p in params)
    out = {k: v / n for k, v in ledger.bytes.items()}
    out["total"] = sum(ledger.bytes.values()) / n
    return out


def backward_and_step_ms(count: int, step_in_backward: bool, bucket_numel: int | None = None, numel: int = 16,
                         reps: int = 30, backend: str = "cpu") -> float:
    """Median wall time of a backward and step() over ``count`` tiny fp32 tensors of
    ``numel`` elements: the host's work, the step inside backward against after it. The
    backward is ``chain_loss``'s, the same both ways, so the difference is what stepping
    inside backward adds (or saves) on the host. ``bucket_numel`` sets the ready buckets'
    size (None: step_in_backward.BUCKET_NUMEL)."""
    import statistics
    import time
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(numel, generator=gen).requires_grad_() for _ in range(count)]
    opt = AdamWTau(params, backend=backend, step_in_backward=step_in_backward)
    if bucket_numel is not None and step_in_backward:
        opt._in_backward.bucket_numel = bucket_numel
    times = []
    for i in range(3 + reps):
        loss = chain_loss(params)
        t0 = time.perf_counter()
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3
