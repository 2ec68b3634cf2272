"""AdamWTau: torch.optim.AdamW with its weight decay set by the EMA timescale tau.

Decay is given exactly one way, for the optimizer and, overriding it, per group:
  tau_epochs + iters_per_epoch   per-step decay d = 1 - (lr_t / lr_peak) / (tau_epochs * M)
  tau_iters                      d = 1 - (lr_t / lr_peak) / tau_iters
  weight_decay (lambda)          d = 1 - lr_t * lambda        (torch.optim.AdamW's form)
  none of them                   d = 1                        (torch.optim.AdamW defaults to 0.01)
lr_peak is each group's lr at construction, kept in the group: LR schedulers change
``lr`` and the tau form follows lr_t / lr_peak, so the decay's shape follows the
schedule while the lr's size leaves it alone.

``opt.state`` is the one truth: the buckets, tables and step counts the step keeps are
caches of it, rebuilt whenever it changes (launch/state.py's note).
"""
from __future__ import annotations

import contextlib

import torch

from ..core.contract import bias_table
from ..formats import registry
from ..launch import backends, clipping, ops
from ..launch.buckets import Bucket, BucketLayout, build, master_form
from ..launch.state import OptimizerState, tracked
from ..launch.step_scalars import bucket_scalars
from . import checkpoints, report, step_hooks
from .step_in_backward import InBackward
from .checks import (DECAY_KEYS, check_hyper, check_max_grad_norm, check_params, check_seed, check_state_dict,
                     check_torch_switches, decay_spec, finite, tau_lambda)
from .step_plan import check_capture, check_groups, plan_launches, seen

# what pickle, deepcopy and torch.save(opt) keep beyond torch's defaults, state and param_groups
_PICKLED = ("_backend", "_seed", "_default_decay", "_count_on_device", "_step_in_backward", "_max_grad_norm")


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
        master_weights: True keeps an fp32 copy of bf16/fp16 params; the param is its
            round-to-nearest-even image. "remainder" (bf16 params only) keeps the same fp32
            master, bit for bit, as the bf16 param plus an int16 remainder (2 bytes a
            parameter instead of 4); the param is then the master rounded to nearest with
            ties away from zero (docs/numerics.md).
        stochastic_rounding: bf16/fp16 params without master weights are rounded
            stochastically, from bits keyed by (seed, step, parameter index, element index).
        state_dtype: dtype of exp_avg / exp_avg_sq (/ max_exp_avg_sq): torch.float32,
            torch.bfloat16, None for torch's choice (the param's dtype; fp32 with master weights),
            or a quantized format's name (formats.registry.QUANTIZED): "8bit", uint8 codes with
            an fp32 scale per 256 elements (formats.q8_blockwise); each format's rules are in
            docs/numerics.md. The quantized formats apply to tensors of at least ``min_quantized_numel`` elements
            (4096, as bitsandbytes and torchao; counted on the whole parameter, not a shard;
            smaller ones, norms and biases, keep fp32 states). Per group.
        min_quantized_numel: that minimum size. ``q8_min_numel`` is its old name, still accepted
            (the new name wins where both are given).
        seed: the stochastic rounding seed, an int in [0, 2**63).
        capturable: count steps on the parameters' device and build the per-step scalars
            there, so step() never waits on the device and can be captured in a CUDA graph.
            A tensor lr (changed in place by LR schedulers) implies it. GradScaler also
            switches the optimizer to device counting at its first step (found_inf is read
            inside the kernel, never on the host).
        step_in_backward: step each parameter inside backward as soon as its gradient is
            complete, and free the gradient (docs/step_in_backward.md): the same bits as the
            ordinary step, about the gradient's bytes less at the peak. ``opt.step()`` then
            finishes the step; the backward of every micro-batch but the last runs inside
            ``with opt.accumulating():``.
        max_grad_norm: clip the gradients' global norm to this value inside the step, as
            ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` before it (after
            ``scaler.unscale_`` with a GradScaler), with the same norm on every backend and no
            host sync (docs/numerics.md, "Gradient clipping"). ``opt.grad_norm`` then holds the
            last step's norm before clipping, one device tensor written in place (NaN before the
            first step). A step whose norm is inf or NaN is skipped, as a GradScaler skips one.
            None (the default): no clipping. Not with step_in_backward.
    """

    # GradScaler hands over grad_scale and found_inf as attributes: the kernels unscale the
    # gradients and skip a step with inf/NaN gradients themselves, with no host sync.
    _step_supports_amp_scaling = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float | None = None, amsgrad: bool = False, *,
                 tau_epochs: float | None = None, iters_per_epoch: float | None = None,
                 tau_iters: float | None = None, maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False, fused: bool | None = None,
                 backend: str = "auto", master_weights: bool | str = False, stochastic_rounding: bool = False,
                 state_dtype: torch.dtype | str | None = None, min_quantized_numel: int | None = None,
                 seed: int = 0, step_in_backward: bool = False, q8_min_numel: int | None = None,
                 max_grad_norm: float | None = None):
        # torch.optim.AdamW's implementation switches: accepted, and our kernels run regardless
        check_torch_switches(dict(foreach=foreach, fused=fused, differentiable=differentiable), "AdamWTau")
        if backend != "auto" and backend not in backends.BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {backends.BACKENDS}, got {backend!r}")
        check_seed(seed)
        if not isinstance(step_in_backward, bool):
            raise TypeError(f"AdamWTau: step_in_backward must be True or False, got {step_in_backward!r}")
        self._step_in_backward = step_in_backward
        self._max_grad_norm = check_max_grad_norm(max_grad_norm, step_in_backward)
        self._in_backward = InBackward(self) if step_in_backward else None
        self._backend = backend
        self._seed = seed
        self._default_decay = decay_spec(
            dict(tau_epochs=tau_epochs, iters_per_epoch=iters_per_epoch, tau_iters=tau_iters,
                 weight_decay=weight_decay), "AdamWTau") or decay_spec({"weight_decay": 0.0}, "AdamWTau")
        defaults = dict(lr=lr, betas=betas, eps=eps, amsgrad=amsgrad, maximize=maximize,
                        master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        state_dtype=state_dtype, capturable=bool(capturable),
                        min_quantized_numel=registry.min_numel(dict(min_quantized_numel=min_quantized_numel,
                                                                    q8_min_numel=q8_min_numel)))
        check_hyper(defaults, "AdamWTau")
        self._count_on_device = False
        self._caches()
        super().__init__(params, defaults)
        self.state = OptimizerState(self.state)
        # the last step's gradient norm, with max_grad_norm: one tensor, written in place (a CUDA
        # graph replays into it, and a compiled step writes it without an attribute store)
        self.grad_norm = clipping.norm_holder(self.param_groups) if self._max_grad_norm is not None else None

    def _caches(self) -> None:
        """What the step keeps besides opt.state: all of it rebuilt from opt.state and the groups."""
        self._hyper_checked: dict[int, tuple] = {}
        self._resolved: dict[torch.device, str] = {}
        self._layout = BucketLayout()
        self._captured_tables: list = []  # tables a CUDA graph replays (step_plan.check_capture)

    # --- construction -----------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        where = f"param group {len(self.param_groups)}"
        group = dict(param_group)
        if "q8_min_numel" in group and "min_quantized_numel" not in group:  # the old name
            group["min_quantized_numel"] = group.pop("q8_min_numel")
        spec = decay_spec(group, where) or self._default_decay
        for k in DECAY_KEYS:
            group.pop(k, None)
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        check_params(params, where, group.get("param_names"))
        merged = {**self.defaults, **group}
        check_hyper(merged, where)
        for i, p in enumerate(params):
            master_form(merged, p, f"{where}: params[{i}]")  # "remainder" takes bf16 params only
        for device in {p.device for p in params}:
            self.backend_for(device)
            # device-counted steps (capturable, GradScaler, torch.compile) look the bias corrections
            # up in tables; built here, eagerly, they are never traced
            bias_table(merged["betas"][0], False, device)
            bias_table(merged["betas"][1], True, device)
        group.update(spec)
        group["params"] = params
        super().add_param_group(group)
        self._layout.invalidate(forget_counts=False)
        if self._in_backward is not None:
            self._in_backward.watch(params)
        group = self.param_groups[-1]
        if "lr_peak" not in group:
            lr = group["lr"]
            group["lr_peak"] = finite(f"{where}: lr", lr.item()) if isinstance(lr, torch.Tensor) else lr
        if spec["decay"] == "tau":
            group["weight_decay"] = tau_lambda(group)
        # what the group is built with is what the step compares later writes to
        self._hyper_checked[len(self.param_groups) - 1] = seen(group)

    # --- state dicts, pickle, deepcopy -----------------------------------------------------
    def state_dict(self) -> dict:
        """torch's state dict, with plain dicts (loads with ``torch.load(weights_only=True)``).
        Refused, before anything is written, for 8-bit states no checkpoint can place
        (launch/sharded_scales.py's note)."""
        checkpoints.check_placeable(self.param_groups, self.state)
        return checkpoints.packed(super().state_dict())

    def torch_state_dict(self) -> dict:
        """A torch.optim.AdamW state dict of this optimizer: 8-bit moments decoded to fp32
        (map[code] * scale), no scales, so torch.optim.AdamW (or any AdamWTau) loads it."""
        params = [p for g in self.param_groups for p in g["params"]]
        return checkpoints.decoded(self.state_dict(), dict(enumerate(params)))

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, after checking that every saved state fits its parameter (nothing
        changes if not). The saved hyperparameters replace the groups' as in torch, except
        how states are stored (master_weights, state_dtype): those stay this optimizer's, and
        the saved states are converted to them exactly (checkpoints.py's notes)."""
        check_state_dict(self.param_groups, state_dict)
        forms = checkpoints.storage_options(self.param_groups)
        super().load_state_dict(state_dict)
        checkpoints.keep_storage_options(self.param_groups, forms)
        checkpoints.restore_dtypes(self.param_groups, self.state, state_dict)
        # the loaded groups' decay settled now, so timescales() reports it before any step
        check_groups(self.param_groups, self._hyper_checked)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), **{k: self.__dict__[k] for k in _PICKLED if k in self.__dict__}}

    def __setstate__(self, state: dict) -> None:
        # torch's load_state_dict comes here too, with new state and groups
        super().__setstate__(state)
        self.state = tracked(self.state)
        for name, default in (("_backend", "auto"), ("_seed", 0), ("_count_on_device", False),
                              ("_step_in_backward", False), ("_max_grad_norm", None)):
            self.__dict__.setdefault(name, default)  # pickled before the attribute existed
        if self.__dict__.get("grad_norm") is None:
            self.grad_norm = clipping.norm_holder(self.param_groups) if self._max_grad_norm is not None else None
        if self._step_in_backward and self.__dict__.get("_in_backward") is None:  # unpickled, deep-copied
            self._in_backward = InBackward(self)
            for group in self.param_groups:
                self._in_backward.watch(group["params"])
        self.__dict__.setdefault("_in_backward", None)
        self.__dict__.setdefault("_default_decay", decay_spec({"weight_decay": 0.0}, "AdamWTau"))
        self._caches()
        checkpoints.upgrade_groups(self.param_groups, self.defaults)

    def backend_for(self, device) -> str:
        """The backend that steps parameters on ``device``."""
        device = torch.device(device)
        name = self._resolved.get(device)
        if name is None:
            name = self._resolved[device] = backends.resolve(self._backend, device)
        return name

    def timescales(self) -> list[dict]:
        """Each group's decay: its form, effective tau_iter and tau_epoch, and torch-equivalent
        lambda (``report.timescales``). Decay keys written since the last step are settled first,
        as the next step would (checks.settle_decay): a write the step would refuse raises here."""
        check_groups(self.param_groups, self._hyper_checked)
        return report.timescales(self.param_groups)

    @property
    def step_in_backward(self) -> bool:
        """Whether this optimizer steps its parameters inside backward (read-only; for trainers'
        integrations, which must check what they can combine with it)."""
        return self._step_in_backward

    def accumulating(self):
        """With ``step_in_backward``: a context in which backward only accumulates gradients (every
        micro-batch but the last); the backward after it steps. A no-op context otherwise."""
        if self._in_backward is None:
            return contextlib.nullcontext()
        return self._in_backward.accumulating_block()

    def register_ddp(self, ddp_model) -> None:
        """With ``step_in_backward`` and DistributedDataParallel: step each DDP bucket after its
        all-reduce (a comm hook registered on ``ddp_model``), not before it."""
        if self._in_backward is None:
            raise RuntimeError("AdamWTau.register_ddp is for step_in_backward=True; an ordinary step needs nothing "
                               "from DDP")
        self._in_backward.register_ddp(ddp_model)

    # --- the step --------------------------------------------------------------------------
    profile_hook_step = staticmethod(step_hooks.wrap_step)

    def _counts_on_device(self, group: dict) -> bool:
        # a compiled step counts on the device too: a host count would be a constant in the graph
        return (bool(group["capturable"]) or self._count_on_device or isinstance(group["lr"], torch.Tensor)
                or torch.compiler.is_compiling())

    def _buckets(self, flat) -> list[Bucket]:
        if torch.compiler.is_compiling():
            # traced once into the graph; the graph's replays run no Python, so nothing is cached,
            # and eager steps after it must not trust the buckets they had
            self._layout.forget()
            return build(self, flat, self._counts_on_device)
        return self._layout.get(self, flat, self._counts_on_device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._in_backward is not None:  # the parameters were stepped inside backward: finish
            self._in_backward.finish()
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        clip = self._max_grad_norm is not None
        if (found_inf is not None or clip) and not self._count_on_device:
            # a skipped step must not advance step counts the host cannot see: count on the device
            self._count_on_device = True
            self._layout.invalidate(forget_counts=False)
        # every check first: a bad gradient, lr or decay raises before any tensor changes
        flat, launches = plan_launches(self.param_groups, self._buckets,
                                       lambda: self._layout.invalidate(forget_counts=False))
        check_groups(self.param_groups, self._hyper_checked)
        check_capture(launches, self._captured_tables)
        coef, found_inf = (clipping.clip_step(flat, self._max_grad_norm, grad_scale, found_inf, self.grad_norm)
                           if clip else (None, found_inf))
        self._launch(flat, launches, grad_scale, found_inf, coef)
        return loss

    def _launch(self, flat, launches, grad_scale, found_inf, grad_coef=None) -> None:
        """Launch planned, checked buckets (step_plan) and count their step."""
        work = [(b, tables, self.param_groups[b.group]) for b, tables in launches]
        work = [(b, tables, group, bucket_scalars(b, group, by_value=tables is not None))
                for b, tables, group in work]
        seed = self._seed
        for b, tables, group, scalars in work:
            scale = None if grad_scale is None else grad_scale.to(b.device, torch.float32, non_blocking=True)
            inf = None if found_inf is None else found_inf.to(b.device, torch.float32, non_blocking=True)
            coef = None if grad_coef is None else grad_coef.to(b.device, non_blocking=True)
            maximize = bool(group["maximize"])
            sr = bool(group["stochastic_rounding"]) and not b.master
            if tables is not None:  # eager, contiguous, a kernel backend: launch from the bucket's tables
                launch = backends.launcher(b.backend)
                for t in tables:
                    launch(t, scalars, *b.dtypes, seed, b.amsgrad, maximize, b.master, sr, scale, inf, coef)
            else:
                ops.step_function(b.backend)(
                    b.locals, b.grads(flat), b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, b.masters, scalars,
                    b.ids, seed, b.amsgrad, maximize, sr, scale, inf, **b.scale_lists(), state_format=b.format.id,
                    grad_coef=coef)
            b.count_step(inf)
