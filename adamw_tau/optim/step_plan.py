"""What a step launches, decided and checked before anything is written.

[note: host work]
A step on a small model is host-bound, so step() does per tensor only what must be done
every step: collect the gradients and compare their addresses with the cached launch
tables (launch/buckets.py, launch/tables.py). At new addresses the tables are rebuilt, and
the gradients get the full check the first time and a shape-and-device test after it
(tables.py's note on new gradients); hyperparameters are checked when a value changes.
Everything is checked before the first launch, so a bad value raises with no tensor changed.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..launch.buckets import Bucket
from ..launch.tables import StorageMoved
from .checks import DECAY_FIELDS, check_grads, check_hyper, check_lr, decay_fields, settle_decay


def plan_launches(param_groups: list[dict], buckets_for: Callable, rebuild: Callable, flat=None
                  ) -> tuple[list, list[tuple[Bucket, list | None]]]:
    """The gradients, and each bucket with its launch tables (None: the list-form op steps
    it); gradients checked where they are new. ``buckets_for(flat_grads)`` gives the buckets;
    ``rebuild()`` drops them when a parameter's storage moved. ``flat``: the gradients indexed
    by parameter (every parameter's ``.grad`` if None)."""
    if flat is None:
        flat = [p.grad for group in param_groups for p in group["params"]]
    checked = []

    def check():  # once a step at most, and only when some bucket's gradients are new tensors
        if not checked:
            check_grads(param_groups)
            checked.append(True)

    def plan(buckets):
        return [(b, b.planner.tables(b.locals, b.grads(flat), check) if b.planner else None) for b in buckets]

    try:
        launches = plan(buckets_for(flat))
    except StorageMoved:  # p.data was replaced: the buckets point at the old storage
        rebuild()
        launches = plan(buckets_for(flat))
    if any(t is None for _, t in launches):
        check()
    return flat, launches


def seen(group: dict) -> tuple:
    """What ``check_groups`` compares to decide that a group needs checking again: every
    hyperparameter a step reads except lr, the decay's keys last."""
    return (tuple(group["betas"]), group["eps"], group["state_dtype"], group.get("min_quantized_numel"),
            group.get("q8_min_numel"),
            group["master_weights"], group.get("lr_peak"), *decay_fields(group))


def check_groups(param_groups: list[dict], checked: dict) -> None:
    """Hyperparameters, checked again only when one changed (``checked`` remembers what was
    seen: O(groups) a step); lr, which schedulers change every step, by itself. A changed decay
    key is settled (checks.settle_decay): the group then shows the decay that applies."""
    for gi, group in enumerate(param_groups):
        now = seen(group)
        lr = group["lr"]
        before = checked.get(gi)
        if before != now:
            where = f"param group {gi}"
            check_hyper(group, where)
            settle_decay(group, None if before is None else before[-len(DECAY_FIELDS):], where)
            checked[gi] = seen(group)
        elif not (type(lr) is float and 0.0 <= lr < math.inf):  # noqa: E721 (a float subclass: the full check)
            check_lr(lr, f"param group {gi}")


def check_capture(launches: list[tuple[Bucket, list | None]], keep: list) -> None:
    """Under CUDA-graph capture: refuse host-counted buckets, and keep the tables a captured
    step reads alive for as long as the optimizer lives.

    [note: capture] A host-counted bucket passes its step's scalars by value and counts on the
    host, so a captured step would replay step t's lr, bias corrections and rounding key
    forever (torch's Adam refuses the same: capturable=False). A replay reads the tables'
    raw addresses; an eager rebuild after capture (new gradients, a loaded state dict) makes
    new tables, so the captured ones are kept in ``keep``. Tables are never built during a
    capture (tables.py refuses: the first step needs an eager warm-up).
    """
    cuda = [(b, tables) for b, tables in launches if b.device.type == "cuda"]
    if not cuda or not torch.cuda.is_current_stream_capturing():
        return
    for b, _ in cuda:
        if not b.on_device:
            raise RuntimeError(
                f"AdamWTau: step() is being captured in a CUDA graph, but param group {b.group} counts steps on "
                "the host (capturable is False): every replay would repeat this step's lr and bias corrections. "
                "Pass capturable=True (for the optimizer or that group)")
    keep.extend(t for _, tables in cuda if tables for t in tables)
