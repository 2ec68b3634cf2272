"""The bucket layout: which parameters share one launch, their states, ids and step counts.

A bucket holds the tensors of one param group that share a device, dtype path and step
count. ``BucketLayout`` builds the buckets, keeps them while the set of parameters with
gradients, the gradients' dtypes and the groups' dtype options stay as they were, and
forgets them when told (a loaded state dict, a new param group, a parameter's storage
replaced).

[note: host work per step]
step() must cost little per tensor. Built once, a bucket keeps its tensor lists, its
launch tables (``tables.TablePlanner``) and one CPU tensor of step counts whose 0-dim
views are the states' "step" entries, so one add counts them all. A step then only
collects the gradients and their addresses. Measured on the 2-core CPU machine, 2000 tiny
tensors: 22 ms of host work per step before the buckets were cached.
"""
from __future__ import annotations

import numpy as np
import torch

from ..formats import bf16_remainder, registry
from ..formats.registry import MOMENTS
from .sharded_scales import flat_codes_problem, is_dtensor, local, placed
from .state import CHANGES, OptimizerState, ParamState
from .tables import FP32_MASTER, NO_MASTER, REMAINDER_MASTER, CaptureWithoutWarmup, TablePlanner, chunk_for

# the state each master form keeps, and its dtype (formats.registry.MASTER_FORMS)
MASTER_KEYS = {m.id: (m.key, m.dtype) for m in registry.MASTER_FORMS.values() if m.key}

_KERNEL_BACKENDS = ("triton", "cuda", "cpu")


class Bucket:
    """Tensors of one group that share a device, dtype path and step count: one launch.

    ``done`` counts the steps taken as the host knows them; with ``on_device`` the count
    that matters is ``steps`` on the device (skipped steps are not counted there).
    """

    def __init__(self, group: int, device: torch.device, master: int, amsgrad: bool, done: int, on_device: bool):
        self.group, self.device, self.master, self.amsgrad, self.done = group, device, master, amsgrad, done
        self.on_device = on_device
        self.builder = None       # (key, contract.DeviceScalarBuilder) for device-counted steps
        self.host_steps = None    # the NumPy array under ``steps`` when the host counts
        self.steps_bytes = None   # host_steps' bytes after the last count (BucketLayout's note)
        self.step_views: list = []  # the states' "step" tensors: views of ``steps``
        self.planner = None       # tables.TablePlanner, for a kernel backend on contiguous tensors
        self.sharded = False      # DTensor params: the kernels step local shards
        self.backend = None       # backends.BACKENDS name, for the bucket's device
        self.params: list = []
        self.ids: list = []
        self.scales: dict = {}    # quantized states: moment key -> its scale tensors (formats.registry)
        self.format = registry.FP32  # the moments' state format

    def count_step(self, found_inf) -> None:
        """Count the step just launched: on the host, or on the device where a skipped step
        (``found_inf`` != 0) does not count."""
        if found_inf is None and self.host_steps is not None:
            self.host_steps += 1  # the states' "step" tensors are views of it
            self.steps_bytes = self.host_steps.tobytes()
        elif found_inf is None:
            self.steps += 1
        else:
            self.steps += (found_inf == 0).to(torch.float32)
        self.done += 1

    def scale_lists(self) -> dict:
        """The quantized formats' scales as the step functions' keyword arguments ({} unless quantized)."""
        return {f"{key}_scales": ts for key, ts in self.scales.items() if ts}

    def grads(self, flat_grads) -> list:
        gs = [flat_grads[i] for i in self.ids]
        return [local(g) for g in gs] if self.sharded else gs



def master_form(group: dict, p: torch.Tensor, where: str) -> int:
    """tables.NO_MASTER, FP32_MASTER or REMAINDER_MASTER for ``p`` in ``group``: fp32 params
    need no master; ``master_weights="remainder"`` is for bfloat16 params only."""
    mw = group["master_weights"]
    if mw == "remainder":
        if p.dtype != torch.bfloat16:
            raise ValueError(f"{where} is {p.dtype}, but its group has master_weights='remainder', which keeps an "
                             "fp32 master as a bfloat16 param plus a 16-bit remainder: use bfloat16 params, or "
                             "master_weights=True for an fp32 master copy")
        return REMAINDER_MASTER
    return FP32_MASTER if mw and p.dtype != torch.float32 else NO_MASTER


def state_format(group: dict, p: torch.Tensor, master: int) -> registry.StateFormat:
    """The format of p's moments (formats.registry.select: the group's state_dtype, its minimum
    size on p's whole numel, not a shard's: every shard keeps the same format)."""
    return registry.select(group, p, master)


def init_state(state: dict, group: dict, p: torch.Tensor, master: int, fmt: registry.StateFormat) -> dict:
    """Create what ``state`` lacks. Writes with ``dict.__setitem__``: our own writes are not a
    user's change (state.py). Quantized moments start as the zero code with zero scales (the
    scales cover the local shard's blocks; a DTensor's as sharded_scales.placed places them)."""
    if "step" not in state:
        dict.__setitem__(state, "step", torch.tensor(0.0, dtype=torch.float32))
    for key in MOMENTS[:3 if group["amsgrad"] else 2]:
        if fmt.key(key) in state:
            continue
        for k, t in fmt.new(key, p, local(p)).items():
            dict.__setitem__(state, k, placed(p, fmt, k, t))
    if master == FP32_MASTER and "master_param" not in state:
        dict.__setitem__(state, "master_param", p.detach().to(torch.float32, copy=True))
    if master == REMAINDER_MASTER and bf16_remainder.STATE_KEY not in state:
        # the master is the param widened (as torch AdamW's state, or a fresh one implies): remainder 0
        dict.__setitem__(state, bf16_remainder.STATE_KEY, bf16_remainder.from_param(p.detach()))
    return state


class BucketLayout:
    """The buckets of one optimizer, built lazily and reused while they are true to ``opt.state``.

    [note: step counts]
    A host-counted bucket's step counts live in one NumPy array, and the states' ``step``
    tensors are 0-dim views of it. The bucket's scalars use ``Bucket.done``; the array's
    bytes are kept after every count, and a step whose array reads otherwise (a user wrote
    ``state["step"]`` in place, or loaded into it with ``copy_``) rebuilds the buckets from
    the states' own counts, as torch.optim.AdamW reads them. 0.3 µs a bucket a step.
    """

    def __init__(self):
        self.version = 0
        self._key = None
        self._buckets: list[Bucket] | None = None
        self._seen = None      # (opt.state, state.CHANGES) when the buckets were built
        self._watched = ()     # plain dicts in opt.state: (param, dict, its items)

    def invalidate(self, forget_counts: bool = True) -> None:
        """Rebuild at the next step; keep the old buckets to read host step counts from
        unless the counts themselves changed (a loaded state dict)."""
        if forget_counts:
            self._buckets = None
            self._key = None
        self.version += 1

    def forget(self) -> None:
        """Drop the buckets, counts included: a compiled step has pointed the states' ``step``
        entries at its own counts. A plain store, so a traced step guards on nothing here."""
        self._buckets = None

    def get(self, opt, flat_grads, counts_on_device) -> list[Bucket]:
        """The cached buckets if ``opt``'s layout still holds, else new ones."""
        # a gradient's dtype picks its bucket, so it is part of the key
        key = (self.version, tuple(None if g is None else g.dtype for g in flat_grads),
               tuple((g["amsgrad"], g["master_weights"], g["state_dtype"], registry.min_numel(g),
                      g["stochastic_rounding"], counts_on_device(g)) for g in opt.param_groups))
        if self._buckets is None or self._key != key or not self._true_to(opt.state):
            self._buckets = build(opt, flat_grads, counts_on_device, self._buckets)
            self._key = key
            self._seen = (opt.state, CHANGES[0])
            self._watched = _plain_entries(opt.state, self._buckets)
        return self._buckets

    def _true_to(self, state) -> bool:
        """True while nothing the buckets hold can differ from ``state`` (state.py's note)."""
        seen, changes = self._seen
        if state is not seen or CHANGES[0] != changes:
            return False
        for b in self._buckets:
            if b.host_steps is not None and b.host_steps.tobytes() != b.steps_bytes:
                return False
        for p, d, items in self._watched:
            if state.get(p) is not d or len(d) != len(items) or any(d.get(k) is not v for k, v in items):
                return False
        return True


def _plain_entries(state, buckets: list[Bucket]) -> list:
    """The entries of ``state`` whose writes are not counted: every one if ``state`` is not an
    OptimizerState, else the plain dicts a user assigned."""
    everything = type(state) is not OptimizerState
    return [(p, state[p], list(state[p].items())) for b in buckets for p in b.params
            if everything or type(state[p]) is not ParamState]


def whole_step(step, where: str) -> int:
    """A state's step count as an int; a count that is not a whole number >= 0 is an error."""
    value = float(step)
    if not (value >= 0 and value == int(value)):
        raise ValueError(f"{where}: state['step'] is {value!r}; AdamWTau counts whole steps (>= 0). Write a "
                         "whole number, or clear the state (opt.state[p].clear()) to start it again")
    return int(value)


def check_state_fits(state: dict, p: torch.Tensor, fmt: registry.StateFormat, where: str) -> None:
    """A parameter's states must have its shape and device and the dtypes the kernels are told:
    after ``p.data`` is replaced by a tensor of another shape, or a state tensor by one of
    another dtype, they do not, and a kernel would read past them or misread them."""
    fixed = dict(MASTER_KEYS.values())
    for k in MOMENTS:
        for other in {f.key(k) for f in registry.STATE_FORMATS.values()} - {fmt.key(k)}:
            if other in state:  # a moment in another form: load a state dict to convert
                raise RuntimeError(f"{where}: its state has {other!r}, but its group keeps its moments as "
                                   f"{fmt.name} (state_dtype): load a state dict (it converts), or clear the state "
                                   "to start again")
    for key in (*(fmt.key(k) for k in MOMENTS), *fixed):
        t = state.get(key)
        if t is None:
            continue
        moment = next((k for k in MOMENTS if fmt.key(k) == key), None)
        dtype = fixed.get(key, fmt.dtype)
        problem = fmt.scale_problem(state, moment, local(p)) if moment and fmt.quantized and t.dtype == dtype \
            else None
        if problem:
            raise RuntimeError(f"{where}: {problem}; load a state dict saved by AdamWTau, or clear the state to start "
                               "it again")
        shape = fmt.codes_shape(p, p) if moment else p.shape
        if tuple(t.shape) != tuple(shape):
            raise RuntimeError(f"{where} has shape {tuple(p.shape)} but its state {key!r} has shape "
                               f"{tuple(t.shape)} (p.data was replaced by a tensor of another shape?); clear its "
                               "state (opt.state[p].clear()) to start it again")
        if t.dtype != dtype or t.device != p.device:
            raise RuntimeError(f"{where}: its state {key!r} is {t.dtype} on {t.device}, but AdamWTau keeps it as "
                               f"{dtype} on {p.device} (the group's state_dtype and master_weights); assign a "
                               f"tensor of that dtype and device, or clear the state to start it again")


def build(opt, flat_grads, counts_on_device, previous: list[Bucket] | None = None) -> list[Bucket]:
    """Bucket ``opt``'s parameters that have gradients; create missing state. Changes no value.

    A count a previous bucket holds is taken from it (no device read) while the state's
    ``step`` is still that bucket's view and, host-counted, reads what the bucket counted;
    otherwise the state's own ``step`` is read, as torch.optim.AdamW reads it.
    """
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise CaptureWithoutWarmup("the optimizer's states and step counts")
    buckets: dict[tuple, Bucket] = {}
    known = {id(p): (b.done, view) for b in (previous or ())
             if b.host_steps is None or b.host_steps.tobytes() == b.steps_bytes
             for p, view in zip(b.params, b.step_views)}
    compiling = torch.compiler.is_compiling()
    pid = -1
    for gi, group in enumerate(opt.param_groups):
        for p in group["params"]:
            pid += 1
            g = flat_grads[pid]
            if g is None:
                continue
            master = master_form(group, p, f"param group {gi}: params[{pid}]")
            fmt = state_format(group, p, master)
            problem = flat_codes_problem(p, fmt)  # before any state is made
            if problem:
                raise RuntimeError(f"param group {gi}: params[{pid}] {problem}")
            step = opt.state.get(p, {}).get("step")
            if step is None:  # a new parameter, or its state cleared
                done = 0
            elif id(p) in known and known[id(p)][1] is step:
                done = known[id(p)][0]
            elif compiling:
                done = -1  # unknown to the host: the count is carried over on the device below
            else:
                done = whole_step(step, f"param group {gi}: params[{pid}]")
            key = (gi, p.device, p.dtype, g.dtype, master, fmt.id, done)
            b = buckets.get(key)
            if b is None:
                b = buckets[key] = Bucket(gi, p.device, master, bool(group["amsgrad"]), done, counts_on_device(group))
                b.dtypes = (p.dtype, g.dtype, fmt.id)  # the launcher's param dtype, grad dtype, state format
                b.format = fmt
            b.params.append(p)
            b.ids.append(pid)
    for b in buckets.values():
        group = opt.param_groups[b.group]
        states = []
        for p, pid in zip(b.params, b.ids):
            state = opt.state.get(p)
            if state is None:  # created uncounted: our own write (state.py)
                state = ParamState()
                dict.__setitem__(opt.state, p, state)
            check_state_fits(state, p, b.format, f"param group {b.group}: params[{pid}]")
            states.append(state)
        for p, state in zip(b.params, states):
            init_state(state, group, p, b.master, b.format)
        b.sharded = is_dtensor(b.params[0])
        b.locals = [local(p) for p in b.params]
        m, v, vmax = (b.format.key(k) for k in MOMENTS)
        b.exp_avgs, b.exp_avg_sqs = [local(s[m]) for s in states], [local(s[v]) for s in states]
        b.max_exp_avg_sqs = [local(s[vmax]) for s in states] if b.amsgrad else []
        b.masters = [local(s[MASTER_KEYS[b.master][0]]) for s in states] if b.master != NO_MASTER else []
        quantized = b.format.quantized
        b.scales = {key: [local(s[b.format.scale_key(key)]) for s in states] if quantized and (b.amsgrad or i < 2)
                    else [] for i, key in enumerate(MOMENTS)}
        if b.on_device:
            # the device's counts may lag b.done (skipped steps): carry them over, never read them here
            b.steps = torch.stack([s["step"].to(b.device, torch.float32).reshape(()) for s in states])
        else:
            # NumPy-backed: one += in NumPy counts them all, 0.4 µs against 1.9 µs for a torch add_
            b.host_steps = np.full(len(states), float(b.done), dtype=np.float32)
            b.steps = torch.from_numpy(b.host_steps)
            b.steps_bytes = b.host_steps.tobytes()
        b.step_views = [b.steps[i] for i in range(len(states))]
        for s, view in zip(states, b.step_views):
            dict.__setitem__(s, "step", view)
        scales = tuple(b.scales.values())
        contiguous = all(t.is_contiguous() for ts in (b.locals, b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs,
                                                       b.masters, *scales) for t in ts)
        b.backend = backend = opt.backend_for(b.device)
        if contiguous and backend in _KERNEL_BACKENDS and not compiling:
            b.planner = TablePlanner(b.locals, b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, b.masters, b.ids,
                                     b.device, chunk_for(backend), scales)
    return list(buckets.values())
