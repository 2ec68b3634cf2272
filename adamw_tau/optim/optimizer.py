"""AdamWTau: torch.optim.AdamW with its weight decay set by the EMA timescale tau.

Decay is given exactly one way, for the optimizer and, overriding it, per group:
  tau_epochs + iters_per_epoch   per-step decay d = 1 - (lr_t / lr_peak) / (tau_epochs * M)
  tau_iters                      d = 1 - (lr_t / lr_peak) / tau_iters
  weight_decay (lambda)          d = 1 - lr_t * lambda        (torch.optim.AdamW's form)
  none of them                   d = 1                        (torch.optim.AdamW defaults to 0.01)
lr_peak is each group's lr at construction, kept in the group: LR schedulers change
``lr`` and the tau form follows lr_t / lr_peak, so the decay's shape follows the
schedule while the lr's size leaves it alone.
"""
from __future__ import annotations

import functools
import math

import torch

from ..core.contract import bias_table
from ..core.timescale import tau_epoch_from_tau_iter
from ..launch import backends, ops
from ..launch.buckets import Bucket, BucketLayout, build
from ..launch.step_scalars import bucket_scalars
from ..launch.tables import StorageMoved
from .checks import (
    DECAY_KEYS,
    check_grads,
    check_hyper,
    check_lr,
    check_params,
    check_state_dict,
    check_torch_switches,
    decay_spec,
    finite,
)

try:  # torch's global step hooks, registered with torch.optim.optimizer.register_optimizer_step_*_hook
    from torch.optim.optimizer import (
        _global_optimizer_post_hooks,
        _global_optimizer_pre_hooks,
    )
    _GLOBAL_STEP_HOOKS = (_global_optimizer_pre_hooks, _global_optimizer_post_hooks)
except ImportError:  # a torch without them: always take torch's own wrapper
    _GLOBAL_STEP_HOOKS = None


class AdamWTau(torch.optim.Optimizer):
    """Fused AdamW, bitwise equal to ``adamw_tau.core.reference`` on every backend.

    Args:
        params: parameters or param groups (a group may override any argument below,
            and name its own decay form).
        lr, betas, eps, amsgrad, maximize: as torch.optim.AdamW (in its positions: weight_decay
            and amsgrad may be passed positionally, as torch allows).
        foreach, fused: torch.optim.AdamW's implementation switches, accepted (None, True or
            False) so that trainers which pass them work; AdamWTau runs its own backend whatever
            they say, so they change neither what runs nor a bit. differentiable=True raises.
        tau_epochs, iters_per_epoch, tau_iters, weight_decay: the decay, one way (module doc).
        backend: "auto" (the fastest available per device) or "reference", "triton",
            "cuda", "cpu"; a named backend that cannot run raises and says why.
        master_weights: keep an fp32 copy of bf16/fp16 params; the param is its
            round-to-nearest-even image.
        stochastic_rounding: bf16/fp16 params without master weights are rounded
            stochastically, from bits keyed by (seed, step, parameter index, element index).
        state_dtype: dtype of exp_avg / exp_avg_sq (/ max_exp_avg_sq): torch.float32,
            torch.bfloat16, or None for torch's choice (the param's dtype; fp32 with master weights).
        seed: the stochastic rounding seed.
        capturable: count steps on the parameters' device and build the per-step scalars
            there, so step() never waits on the device and can be captured in a CUDA graph.
            A tensor lr (changed in place by LR schedulers) implies it. GradScaler also
            switches the optimizer to device counting at its first step (found_inf is read
            inside the kernel, never on the host).
    """

    # GradScaler hands over grad_scale and found_inf as attributes: the kernels unscale the
    # gradients and skip a step with inf/NaN gradients themselves, with no host sync.
    _step_supports_amp_scaling = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float | None = None, amsgrad: bool = False, *,
                 tau_epochs: float | None = None, iters_per_epoch: float | None = None,
                 tau_iters: float | None = None, maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False, fused: bool | None = None,
                 backend: str = "auto", master_weights: bool = False, stochastic_rounding: bool = False,
                 state_dtype: torch.dtype | None = None, seed: int = 0):
        # torch.optim.AdamW's implementation switches: accepted, and our kernels run regardless
        check_torch_switches(dict(foreach=foreach, fused=fused, differentiable=differentiable), "AdamWTau")
        if backend != "auto" and backend not in backends.BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {backends.BACKENDS}, got {backend!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self._backend = backend
        self._seed = seed
        self._default_decay = decay_spec(
            dict(tau_epochs=tau_epochs, iters_per_epoch=iters_per_epoch, tau_iters=tau_iters,
                 weight_decay=weight_decay), "AdamWTau") or decay_spec({"weight_decay": 0.0}, "AdamWTau")
        defaults = dict(lr=lr, betas=betas, eps=eps, amsgrad=amsgrad, maximize=maximize,
                        master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        state_dtype=state_dtype, capturable=bool(capturable))
        check_hyper(defaults, "AdamWTau")
        self._hyper_checked: dict[int, tuple] = {}
        self._resolved: dict[torch.device, str] = {}
        self._layout = BucketLayout()
        self._count_on_device = False
        super().__init__(params, defaults)

    # --- construction -----------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        where = f"param group {len(self.param_groups)}"
        group = dict(param_group)
        spec = decay_spec(group, where) or self._default_decay
        for k in DECAY_KEYS:
            group.pop(k, None)
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        check_params(params, where)
        merged = {**self.defaults, **group}
        check_hyper(merged, where)
        for device in {p.device for p in params}:
            self._backend_for(device)
            # device-counted steps (capturable, GradScaler, torch.compile) look the bias corrections
            # up in tables; built here, eagerly, they are never traced
            bias_table(merged["betas"][0], False, device)
            bias_table(merged["betas"][1], True, device)
        group.update(spec)
        group["params"] = params
        super().add_param_group(group)
        self._invalidate_layout(forget_counts=False)
        group = self.param_groups[-1]
        if "lr_peak" not in group:
            lr = group["lr"]
            group["lr_peak"] = finite(f"{where}: lr", lr.item()) if isinstance(lr, torch.Tensor) else lr
        if spec["decay"] == "tau":
            group["weight_decay"] = 1.0 / (group["lr_peak"] * group["tau_iters"]) if group["lr_peak"] > 0 else 0.0

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, after checking that every saved state fits its parameter (nothing changes if not)."""
        check_state_dict(self.param_groups, state_dict)
        super().load_state_dict(state_dict)
        self._invalidate_layout()

    def _invalidate_layout(self, forget_counts: bool = True) -> None:
        # add_param_group runs inside torch's __init__, before ours sets the layout up
        if "_layout" not in self.__dict__:
            self._layout = BucketLayout()
        self._layout.invalidate(forget_counts)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.pop("_layout", None)
        self._invalidate_layout()
        self.__dict__.setdefault("_count_on_device", False)
        self.__dict__["_hyper_checked"] = {}
        for group in self.param_groups:
            # groups saved by torch.optim.AdamW carry only weight_decay (lambda form)
            group.setdefault("tau_iters", None)
            group.setdefault("tau_epochs", None)
            group.setdefault("iters_per_epoch", None)
            group.setdefault("decay", "tau" if group["tau_iters"] is not None
                             else ("lambda" if group.get("weight_decay", 0.0) > 0 else "none"))
            group.setdefault("lr_peak", float(group["lr"]))
            for k in ("master_weights", "stochastic_rounding", "state_dtype", "amsgrad", "maximize", "capturable"):
                group.setdefault(k, self.defaults.get(k, False))

    def _backend_for(self, device: torch.device) -> str:
        name = self._resolved.get(device)
        if name is None:
            name = self._resolved[device] = backends.resolve(self._backend, device)
        return name

    def backend_for(self, device) -> str:
        """The backend that steps parameters on ``device``."""
        return self._backend_for(torch.device(device))

    # --- reporting -------------------------------------------------------------------------
    def timescales(self) -> list[dict]:
        """Each group's decay: its form, effective tau_iter and tau_epoch, and torch-equivalent lambda.

        tau_iter = 1 / (lr_peak * lambda) for the lambda form; inf with no decay. tau_epoch
        needs iters_per_epoch (given with tau_epochs); None otherwise.
        """
        out = []
        for group in self.param_groups:
            mode = group["decay"]
            if mode == "tau":
                tau_iter = group["tau_iters"]
            elif mode == "lambda":
                tau_iter = 1.0 / (group["lr_peak"] * group["weight_decay"]) if group["lr_peak"] > 0 else math.inf
            else:
                tau_iter = math.inf
            m = group.get("iters_per_epoch")
            out.append(dict(
                decay=mode, tau_iters=tau_iter,
                tau_epochs=(tau_epoch_from_tau_iter(tau_iter, m) if m and math.isfinite(tau_iter) else None),
                weight_decay=(0.0 if math.isinf(tau_iter) else 1.0 / (group["lr_peak"] * tau_iter)),
                lr=float(group["lr"]), lr_peak=group["lr_peak"]))
        return out

    # --- the step --------------------------------------------------------------------------
    # [note: host work]
    # A step on a small model is host-bound, so step() does per tensor only what must be
    # done every step: collect the gradients and compare their addresses with the cached
    # launch tables (buckets.py). At new addresses the tables are rebuilt, and the gradients
    # get the full check the first time and a shape-and-device test after it (tables.py's
    # note on new gradients); hyperparameters are checked when a value changes. Everything
    # is checked before the first launch, so a bad value raises with no tensor changed.

    @staticmethod
    def profile_hook_step(func):
        """torch.optim.Optimizer's wrapper of step(), taken only when it has work to do.

        [note: step wrapper] torch's wrapper opens a profiler range and walks four hook
        tables on every call: 13.5 µs of a 37 µs one-tensor step on the 2-core CPU machine
        (and about 20 µs of a CPU profile of one on an H200's host). Taken when torch.compile
        traces, a profiler is on, or a step hook is registered; otherwise step() is called
        directly.
        """
        hooked = torch.optim.Optimizer.profile_hook_step(func)

        @functools.wraps(func)
        def wrapper(self, *args, **kwargs):
            if (torch.compiler.is_compiling() or _GLOBAL_STEP_HOOKS is None or _GLOBAL_STEP_HOOKS[0]
                    or _GLOBAL_STEP_HOOKS[1] or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                    or torch.autograd._profiler_enabled()):
                return hooked(self, *args, **kwargs)
            return func(self, *args, **kwargs)
        return wrapper

    def _counts_on_device(self, group: dict) -> bool:
        # a compiled step counts on the device too: a host count would be a constant in the graph
        return (bool(group["capturable"]) or self._count_on_device or isinstance(group["lr"], torch.Tensor)
                or torch.compiler.is_compiling())

    def _buckets(self, flat) -> list[Bucket]:
        if torch.compiler.is_compiling():
            # traced once into the graph; the graph's replays run no Python, so nothing is cached
            return build(self, flat, self._counts_on_device)
        return self._layout.get(self, flat, self._counts_on_device)

    def _plan_launches(self) -> tuple[list, list[tuple[Bucket, list | None]]]:
        """The gradients, and each bucket with its launch tables (None: the list-form op steps
        it); gradients checked where they are new."""
        flat = [p.grad for group in self.param_groups for p in group["params"]]
        checked = []

        def check():  # once a step at most, and only when some bucket's gradients are new tensors
            if not checked:
                check_grads(self.param_groups)
                checked.append(True)

        def plan(buckets):
            return [(b, b.planner.tables(b.locals, b.grads(flat), check) if b.planner else None) for b in buckets]

        try:
            launches = plan(self._buckets(flat))
        except StorageMoved:  # p.data was replaced: the buckets point at the old storage
            self._invalidate_layout(forget_counts=False)
            launches = plan(self._buckets(flat))
        if any(t is None for _, t in launches):
            check()
        return flat, launches

    def _check_groups(self) -> None:
        """Hyperparameters, checked again only when one changed; lr, which schedulers change
        every step, by itself."""
        checked = self._hyper_checked
        for gi, group in enumerate(self.param_groups):
            seen = (tuple(group["betas"]), group["eps"], group["state_dtype"], group.get("lr_peak"))
            lr = group["lr"]
            if checked.get(gi) != seen:
                check_hyper(group, f"param group {gi}")
                checked[gi] = seen
            elif not (type(lr) is float and 0.0 <= lr < math.inf):  # noqa: E721 (a float subclass: the full check)
                check_lr(lr, f"param group {gi}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and not self._count_on_device:
            # a skipped step must not advance step counts the host cannot see: count on the device
            self._count_on_device = True
            self._invalidate_layout(forget_counts=False)
        # every check first: a bad gradient, lr or decay raises before any tensor changes
        flat, launches = self._plan_launches()
        self._check_groups()
        work = [(b, tables, self.param_groups[b.group]) for b, tables in launches]
        work = [(b, tables, group, bucket_scalars(b, group, by_value=tables is not None))
                for b, tables, group in work]
        seed = self._seed
        for b, tables, group, scalars in work:
            scale = None if grad_scale is None else grad_scale.to(b.device, torch.float32, non_blocking=True)
            inf = None if found_inf is None else found_inf.to(b.device, torch.float32, non_blocking=True)
            maximize = bool(group["maximize"])
            sr = bool(group["stochastic_rounding"]) and not b.master
            if tables is not None:  # eager, contiguous, a kernel backend: launch from the bucket's tables
                launch = backends.launcher(b.backend)
                for t in tables:
                    launch(t, scalars, *b.dtypes, seed, b.amsgrad, maximize, b.master, sr, scale, inf)
            else:
                ops.step_function(b.backend)(
                    b.locals, b.grads(flat), b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, b.masters, scalars,
                    b.ids, seed, b.amsgrad, maximize, sr, scale, inf)
            if inf is None and b.host_steps is not None:
                b.host_steps += 1  # the states' "step" tensors are views of it
            elif inf is None:
                b.steps += 1
            else:
                b.steps += (inf == 0).to(torch.float32)  # a skipped step does not count
            b.done += 1
        return loss
