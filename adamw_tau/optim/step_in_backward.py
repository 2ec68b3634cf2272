"""The step inside backward: each parameter stepped as soon as its gradient is complete, and the
gradient freed at once (``AdamWTau(..., step_in_backward=True)``; docs/step_in_backward.md).

[note: step in backward]
A hook on every parameter (``register_post_accumulate_grad_hook``) marks the parameter ready
when autograd has accumulated its gradient. Ready parameters wait in ``pending`` until they
hold ``bucket_numel`` elements together, and are then stepped in one launch and their
gradients set to None: a launch per ready bucket, not per tensor, where many small tensors
finish together, and never more than about ``bucket_numel`` elements of gradient alive
beyond the one being made. The bucket still waiting when the backward ends is stepped then
(a callback queued on autograd's engine at the backward's first ready parameter), so no
gradient outlives its backward: a trainer that clips or reads gradients between backward and
``opt.step()`` finds none, never a part of them. ``opt.step()`` then only finishes the step:
any gradient no hook saw, the step pre/post hooks, and the end of the round.

The bits are the ordinary step's. The kernels are per element and take, per parameter, its
group's scalars (lr, betas, ...), its own step count and its index in the optimizer (which
keys stochastic rounding): a launch of a subset of the parameters computes what the whole
step computes for that subset. So a ready set is stepped by the ordinary machinery
(``step_plan.plan_launches``, the buckets, ``AdamWTau._launch``) on a gradient list with
every other entry None, the way the ordinary step skips a parameter without a gradient.

[note: caches of the ready sets]
Each ready set keeps its own ``BucketLayout`` (the launch tables and step counts of that
set), reused at every step while the backward's order gives the same sets. A parameter
belongs to at most one cached layout: the states' ``step`` entries are views of the layout
that stepped them last, and a layout not holding those views would count from a stale
``done``. So a new set drops every cached layout that shares a parameter with it, and all
of them are dropped when the optimizer's own layout is replaced or invalidated (a loaded
state dict, a new param group, a moved storage): the same events that rebuild the ordinary
step's buckets.
"""
from __future__ import annotations

import contextlib

import torch

from ..launch.buckets import BucketLayout
from ..launch.sharded_scales import is_dtensor
from .step_plan import check_capture, check_groups, plan_launches

# elements of gradient a ready bucket collects before it is launched: 4 MiB of fp32 gradient
BUCKET_NUMEL = 1 << 20


class InBackward:
    """The hooks, ready sets and round of one ``AdamWTau(step_in_backward=True)``."""

    def __init__(self, opt):
        self.opt = opt
        self.bucket_numel = BUCKET_NUMEL
        self.handles: list = []   # the hooks' handles, alive as long as the optimizer
        self.accumulating = 0     # depth of ``opt.accumulating()`` blocks
        self.pending: list[int] = []   # ready parameters' indices, not stepped yet
        self.pending_set: set[int] = set()
        self.pending_numel = 0
        self.flush_queued = False  # the end-of-backward callback is queued for this backward
        self.stepped: set[int] = set()  # parameters stepped since the last opt.step()
        self.layouts: dict[tuple, BucketLayout] = {}
        self.owner: dict[int, tuple] = {}
        self.index: dict[int, int] = {}  # id(param) -> its index over all groups
        self.params: list = []
        self.seen = None          # (opt._layout, its version) the caches above were made at
        self.ddp_params: set[int] = set()  # id(param) of parameters a DDP comm hook steps

    # --- hooks ----------------------------------------------------------------------------
    def watch(self, params) -> None:
        """Hook ``params`` (a new param group's): each steps when its gradient is complete."""
        for p in params:
            if p.requires_grad:
                self.handles.append(p.register_post_accumulate_grad_hook(self.ready))

    def sync(self) -> None:
        """Drop the ready sets' caches when the optimizer's own layout was replaced or invalidated."""
        layout = self.opt._layout
        if self.seen is None or self.seen[0] is not layout or self.seen[1] != layout.version:
            self.layouts.clear()
            self.owner.clear()
            self.params = [p for group in self.opt.param_groups for p in group["params"]]
            self.index = {id(p): i for i, p in enumerate(self.params)}
            self.seen = (layout, layout.version)

    def ready(self, p: torch.Tensor) -> None:
        """The post-accumulate-grad hook: ``p.grad`` is complete (after FSDP2's reduce-scatter
        for its sharded parameters)."""
        if self.accumulating or p.grad is None or id(p) in self.ddp_params:
            return
        if not is_dtensor(p):
            check_not_data_parallel()
        self.sync()
        i = self.index.get(id(p))
        if i is None:  # not this optimizer's any more (its group was replaced): nothing to step
            return
        if i in self.stepped or i in self.pending_set:
            raise RuntimeError(
                f"AdamWTau(step_in_backward=True): {self.where(i)} got a second gradient before opt.step(): this "
                "backward would step it twice. Call opt.step() after each backward, and run the backward of every "
                "micro-batch but the last inside `with opt.accumulating():`")
        self.pending.append(i)
        self.pending_set.add(i)
        self.pending_numel += p.numel()
        if not self.flush_queued:
            torch.autograd.Variable._execution_engine.queue_callback(self.flush)
            self.flush_queued = True
        if self.pending_numel >= self.bucket_numel:
            self.flush(end=False)

    def flush(self, end: bool = True) -> None:
        """Step the pending parameters now: a full bucket, or (``end``) what waits when the
        backward ends."""
        if end:
            self.flush_queued = False
        ids = self.pending
        self.clear_pending()
        self.launch(ids)

    def where(self, i: int) -> str:
        n = 0
        for gi, group in enumerate(self.opt.param_groups):
            if i < n + len(group["params"]):
                return f"param group {gi}: params[{i}]"
            n += len(group["params"])
        return f"params[{i}]"

    # --- launches -------------------------------------------------------------------------
    def launch(self, ids: list[int]) -> None:
        """Step the parameters ``ids`` as the ordinary step would, then free their gradients."""
        opt = self.opt
        key = tuple(sorted(ids))
        if not key:
            return
        layout = self.layouts.get(key)
        if layout is None:
            for old in {self.owner[i] for i in key if i in self.owner}:
                del self.layouts[old]
                for i in old:
                    self.owner.pop(i, None)
            layout = self.layouts[key] = BucketLayout()
            self.owner.update(dict.fromkeys(key, key))
        flat, launches = plan_launches(opt.param_groups, lambda flat: layout.get(opt, flat, opt._counts_on_device),
                                       lambda: layout.invalidate(forget_counts=False), ReadyGrads(self.params, key))
        check_groups(opt.param_groups, opt._hyper_checked)
        check_capture(launches, opt._captured_tables)
        opt._launch(flat, launches, None, None)
        self.stepped.update(key)
        params = self.params
        for i in key:
            params[i].grad = None

    def finish(self) -> None:
        """``opt.step()``: step what is still pending and every gradient no hook stepped (set by
        hand, or made inside ``accumulating()``), then start a new round."""
        opt = self.opt
        if getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None:
            raise RuntimeError(
                "AdamWTau(step_in_backward=True) cannot be stepped by a GradScaler: its parameters were stepped "
                "inside backward, on gradients still scaled, and an inf found in a later parameter cannot undo an "
                "earlier parameter's step. Train in bfloat16 without a GradScaler, or use step_in_backward=False")
        self.sync()
        params = self.params
        for i in self.stepped:  # DDP writes the reduced bucket back into the gradients it stepped
            if id(params[i]) in self.ddp_params:
                params[i].grad = None
        again = [i for i in self.stepped if params[i].grad is not None]
        if again:
            raise RuntimeError(
                f"AdamWTau(step_in_backward=True): {self.where(min(again))} was stepped inside backward and has a "
                "gradient again; opt.step() would step it twice. Set it to None, or run that backward inside "
                "`with opt.accumulating():` so it only accumulates")
        ids = [i for i, p in enumerate(params) if p.grad is not None and i not in self.stepped]
        self.clear_pending()
        self.flush_queued = False  # a backward that raised never ran its callback
        try:
            self.launch(ids)
        finally:
            self.stepped.clear()
            self.clear_pending()

    def clear_pending(self) -> None:
        self.pending, self.pending_set, self.pending_numel = [], set(), 0

    # --- DDP -----------------------------------------------------------------------------------
    def register_ddp(self, ddp) -> None:
        """Step ``ddp``'s parameters after their bucket's all-reduce (a DDP comm hook), not
        from their own hooks, which run before it."""
        self.sync()
        ids = [id(p) for p in ddp.module.parameters() if p.requires_grad]
        missing = [n for n, p in ddp.module.named_parameters() if p.requires_grad and id(p) not in self.index]
        if missing:
            raise ValueError(f"AdamWTau.register_ddp: the DDP module's parameter {missing[0]!r} is not in this "
                             "optimizer; build the optimizer over ddp_model.parameters()")
        ddp.register_comm_hook((self, ddp.process_group), ddp_step_hook)
        self.ddp_params.update(ids)

    def step_reduced(self, params, grads) -> None:
        """DDP's comm hook: one bucket's parameters, with their all-reduced gradients."""
        if self.accumulating:
            return
        self.sync()
        ids = []
        for p, g in zip(params, grads):
            i = self.index.get(id(p))
            if i is None:
                continue
            if i in self.stepped:
                raise RuntimeError(
                    f"AdamWTau(step_in_backward=True): {self.where(i)} got a second gradient before opt.step(); "
                    "call opt.step() after each backward, and run every micro-batch but the last inside "
                    "`with ddp_model.no_sync(), opt.accumulating():`")
            p.grad = g
            ids.append(i)
        self.launch(ids)

    @contextlib.contextmanager
    def accumulating_block(self):
        self.accumulating += 1
        try:
            yield
        finally:
            self.accumulating -= 1


class ReadyGrads:
    """The gradients of one ready set, indexed by parameter as the optimizer's flat list is:
    a parameter outside the set has None. It iterates over the set's gradients alone, so the
    per-launch work (the bucket layout's key, the tables) grows with the set, not the model."""

    def __init__(self, params: list, ids: tuple):
        self.params, self.ids, self.members = params, ids, frozenset(ids)

    def __getitem__(self, i: int):
        return self.params[i].grad if i in self.members else None

    def __iter__(self):
        return (self.params[i].grad for i in self.ids)


def ddp_step_hook(state, bucket):
    """A DDP comm hook: all-reduce the bucket as DDP's default does (divide, then sum), wait, then
    step its parameters. The wait keeps every step on the backward's thread; the all-reduce of a
    bucket is not overlapped with the backward that follows it."""
    in_backward, group = state
    buf = bucket.buffer()
    buf.div_(group.size())
    torch.distributed.all_reduce(buf, group=group)
    in_backward.step_reduced(bucket.parameters(), bucket.gradients())
    fut = torch.futures.Future()
    fut.set_result(buf)
    return fut


def check_not_data_parallel() -> None:
    """A plain parameter's hook in a process group of several: under DDP it runs before the
    all-reduce, and would step on this rank's gradient alone."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise RuntimeError(
            f"AdamWTau(step_in_backward=True) in a process group of {dist.get_world_size()}: a parameter's gradient "
            "was complete on this rank before any all-reduce. With DistributedDataParallel, call "
            "opt.register_ddp(ddp_model) before the first backward, so that each bucket steps after its all-reduce; "
            "FSDP2 (fully_shard) parameters step after their reduce-scatter without it")

