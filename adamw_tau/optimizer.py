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

import math

import torch

from . import backends
from .buckets import Bucket, BucketLayout, build
from .contract import DeviceScalarBuilder, bias_table, decay_factor, host_scalars
from .tables import StorageMoved
from .timescale import tau_epoch_from_tau_iter, tau_iter_from_tau_epoch

_DECAY_KEYS = ("tau_epochs", "iters_per_epoch", "tau_iters", "weight_decay")
_PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_STATE_DTYPES = (None, torch.float32, torch.bfloat16)


def _finite(name: str, value, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a Python number, got a tensor; pass float({name})")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def _decay_spec(src: dict, where: str) -> dict | None:
    """The decay form ``src`` names, normalised, or None if it names none."""
    given = {k: src[k] for k in _DECAY_KEYS if src.get(k) is not None}
    if not given:
        return None
    forms = [f for f, keys in (("tau_epochs", ("tau_epochs", "iters_per_epoch")),
                                ("tau_iters", ("tau_iters",)),
                                ("weight_decay", ("weight_decay",))) if any(k in given for k in keys)]
    if len(forms) > 1:
        raise ValueError(f"{where}: decay is given as {' and '.join(forms)} at once; give exactly one of "
                         "tau_epochs (with iters_per_epoch), tau_iters, or weight_decay")
    spec = {"decay": "none", "tau_iters": None, "tau_epochs": None, "iters_per_epoch": None, "weight_decay": 0.0}
    if forms[0] == "tau_epochs":
        if "tau_epochs" not in given:
            raise ValueError(f"{where}: iters_per_epoch is given without tau_epochs; add tau_epochs=... "
                             "or drop iters_per_epoch")
        if "iters_per_epoch" not in given:
            raise ValueError(f"{where}: tau_epochs needs iters_per_epoch (dataset size / batch size) to become "
                             "a timescale in iterations; pass iters_per_epoch=..., or give tau_iters instead")
        tau_e = _finite(f"{where}: tau_epochs", given["tau_epochs"], strict=True)
        m = _finite(f"{where}: iters_per_epoch", given["iters_per_epoch"], strict=True)
        spec.update(decay="tau", tau_epochs=tau_e, iters_per_epoch=m, tau_iters=tau_iter_from_tau_epoch(tau_e, m))
    elif forms[0] == "tau_iters":
        spec.update(decay="tau", tau_iters=_finite(f"{where}: tau_iters", given["tau_iters"], strict=True))
    else:
        wd = _finite(f"{where}: weight_decay", given["weight_decay"])
        spec.update(decay="lambda" if wd > 0 else "none", weight_decay=wd)
    return spec


class AdamWTau(torch.optim.Optimizer):
    """Fused AdamW, bitwise equal to ``adamw_tau.reference`` on every backend.

    Args:
        params: parameters or param groups (a group may override any argument below,
            and name its own decay form).
        lr, betas, eps, amsgrad, maximize: as torch.optim.AdamW.
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

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, *,
                 tau_epochs: float | None = None, iters_per_epoch: float | None = None,
                 tau_iters: float | None = None, weight_decay: float | None = None,
                 amsgrad: bool = False, maximize: bool = False, backend: str = "auto",
                 master_weights: bool = False, stochastic_rounding: bool = False,
                 state_dtype: torch.dtype | None = None, seed: int = 0, capturable: bool = False):
        if backend != "auto" and backend not in backends.BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {backends.BACKENDS}, got {backend!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self._backend = backend
        self._seed = seed
        self._default_decay = _decay_spec(
            dict(tau_epochs=tau_epochs, iters_per_epoch=iters_per_epoch, tau_iters=tau_iters,
                 weight_decay=weight_decay), "AdamWTau") or _decay_spec({"weight_decay": 0.0}, "AdamWTau")
        defaults = dict(lr=lr, betas=betas, eps=eps, amsgrad=amsgrad, maximize=maximize,
                        master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        state_dtype=state_dtype, capturable=bool(capturable))
        self._check_hyper(defaults, "AdamWTau")
        self._resolved: dict[torch.device, str] = {}
        self._layout = BucketLayout()
        self._count_on_device = False
        super().__init__(params, defaults)

    # --- construction and validation -------------------------------------------------------
    @staticmethod
    def _check_hyper(group: dict, where: str) -> None:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            if lr.numel() != 1 or not lr.is_floating_point():
                raise TypeError(f"{where}: lr as a tensor must hold one floating-point value, got shape "
                                f"{tuple(lr.shape)} and dtype {lr.dtype}")
        else:
            _finite(f"{where}: lr", lr)
        _finite(f"{where}: eps", group["eps"])
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, b in enumerate(betas):
            if _finite(f"{where}: betas[{i}]", b) >= 1.0:
                raise ValueError(f"{where}: betas[{i}] must be in [0, 1), got {b!r}")
        if group["state_dtype"] not in _STATE_DTYPES:
            raise TypeError(f"{where}: state_dtype must be None, torch.float32 or torch.bfloat16, "
                            f"got {group['state_dtype']!r}")
        if "lr_peak" in group:
            _finite(f"{where}: lr_peak", group["lr_peak"])

    def add_param_group(self, param_group: dict) -> None:
        where = f"param group {len(self.param_groups)}"
        group = dict(param_group)
        spec = _decay_spec(group, where) or self._default_decay
        for k in _DECAY_KEYS:
            group.pop(k, None)
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{where}: params[{i}] is a {type(p).__name__}, not a tensor")
            if p.is_complex():
                raise TypeError(f"{where}: params[{i}] is complex ({p.dtype}); AdamWTau updates real "
                                "tensors: register torch.view_as_real(p) as the parameter instead")
            if p.dtype not in _PARAM_DTYPES:
                raise TypeError(f"{where}: params[{i}] has dtype {p.dtype}; AdamWTau updates float32, "
                                "bfloat16 and float16 parameters (use torch.optim.AdamW for others)")
            if p.is_sparse:
                raise TypeError(f"{where}: params[{i}] is sparse; AdamWTau updates dense tensors")
        merged = {**self.defaults, **group}
        self._check_hyper(merged, where)
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
            group["lr_peak"] = _finite(f"{where}: lr", lr.item()) if isinstance(lr, torch.Tensor) else lr
        if spec["decay"] == "tau":
            group["weight_decay"] = 1.0 / (group["lr_peak"] * group["tau_iters"]) if group["lr_peak"] > 0 else 0.0

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, after checking that every saved state fits its parameter (nothing changes if not)."""
        groups = state_dict.get("param_groups", [])
        if len(groups) != len(self.param_groups):
            raise ValueError(f"load_state_dict: the checkpoint has {len(groups)} param groups, this optimizer "
                             f"{len(self.param_groups)}; build the optimizer with the same groups as the one saved")
        params = [p for g in self.param_groups for p in g["params"]]
        ids = [i for g in groups for i in g["params"]]
        if len(ids) != len(params):
            raise ValueError(f"load_state_dict: the checkpoint holds {len(ids)} parameters, this optimizer "
                             f"{len(params)}; build the optimizer over the same parameters as the one saved")
        for saved_id, p in zip(ids, params):
            for key, value in state_dict.get("state", {}).get(saved_id, {}).items():
                if key != "step" and isinstance(value, torch.Tensor) and value.shape != p.shape:
                    raise ValueError(f"load_state_dict: state {key!r} of parameter {saved_id} has shape "
                                     f"{tuple(value.shape)} but the parameter is {tuple(p.shape)}; the checkpoint "
                                     "belongs to another model")
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
    def _check_grads(self, grads) -> None:
        """Clear errors for bad gradients, before any tensor is touched. A step runs it when a
        bucket's gradients are not the tensors of its last step (buckets.py's note)."""
        pid = 0
        for gi, (group, gl) in enumerate(zip(self.param_groups, grads)):
            for p, g in zip(group["params"], gl):
                if g is not None and (g.is_sparse or g.shape != p.shape or g.device != p.device
                                      or g.dtype not in _PARAM_DTYPES):
                    where = f"param group {gi}: params[{pid}]"
                    if g.is_sparse:
                        raise RuntimeError(f"{where} has a sparse gradient; AdamWTau does not support sparse "
                                           "gradients (use torch.optim.SparseAdam)")
                    if g.dtype not in _PARAM_DTYPES:
                        raise TypeError(f"{where} has a gradient of dtype {g.dtype}")
                    raise RuntimeError(f"{where} has a gradient of shape {tuple(g.shape)} on {g.device}, but "
                                       f"the parameter is {tuple(p.shape)} on {p.device}")
                pid += 1

    def _counts_on_device(self, group: dict) -> bool:
        # a compiled step counts on the device too: a host count would be a constant in the graph
        return (bool(group["capturable"]) or self._count_on_device or isinstance(group["lr"], torch.Tensor)
                or torch.compiler.is_compiling())

    def _device_scalars(self, b: Bucket, group: dict) -> torch.Tensor:
        """The bucket's scalars built on its device from its step count there (contract.DeviceScalarBuilder)."""
        key = (group["lr_peak"], *group["betas"], group["eps"], group["decay"], group["tau_iters"],
               group["weight_decay"])
        if b.builder is None or b.builder[0] != key:
            b.builder = (key, DeviceScalarBuilder(
                lr_peak=group["lr_peak"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
                decay_mode=group["decay"], tau_iters=group["tau_iters"], weight_decay=group["weight_decay"],
                device=b.device))
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            lr64 = lr.to(device=b.device, dtype=torch.float64, non_blocking=True).reshape(1)
        else:
            # a Python lr: its decay factor is range-checked here, on the host
            decay_factor(group["decay"], lr, group["lr_peak"], group["tau_iters"], group["weight_decay"])
            lr64 = torch.full((1,), lr, dtype=torch.float64, device=b.device)  # a fill, no host copy
        return b.builder[1](lr64, b.steps[:1] + 1)

    def _buckets(self, flat) -> list[Bucket]:
        if torch.compiler.is_compiling():
            # traced once into the graph; the graph's replays run no Python, so nothing is cached
            return build(self, flat, self._counts_on_device)
        return self._layout.get(self, flat, self._counts_on_device)

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
        flat = [p.grad for group in self.param_groups for p in group["params"]]
        grads_checked = []

        def check():  # once a step at most, and only when some bucket's gradients are new tensors
            if not grads_checked:
                self._check_grads([[p.grad for p in g["params"]] for g in self.param_groups])
                grads_checked.append(True)

        def plan(buckets):
            return [(b, b.planner.tables(b.locals, b.grads(flat), check) if b.planner else None) for b in buckets]

        # every check first: a bad gradient, lr or decay raises before any tensor changes
        try:
            launches = plan(self._buckets(flat))
        except StorageMoved:  # p.data was replaced: the buckets point at the old storage
            self._invalidate_layout(forget_counts=False)
            launches = plan(self._buckets(flat))
        if any(t is None for _, t in launches):
            check()
        checked = self.__dict__.setdefault("_hyper_checked", {})
        for gi, group in enumerate(self.param_groups):
            # checked again only when a value changed (schedulers change lr every step)
            seen = (group["lr"], tuple(group["betas"]), group["eps"], group["state_dtype"], group.get("lr_peak"))
            if isinstance(group["lr"], torch.Tensor) or checked.get(gi) != seen:
                self._check_hyper(group, f"param group {gi}")
                checked[gi] = seen
        work = []
        for b, tables in launches:
            group = self.param_groups[b.group]
            if b.on_device:
                scalars = self._device_scalars(b, group)
            else:
                scalars = host_scalars(
                    lr=group["lr"], lr_peak=group["lr_peak"], beta1=group["betas"][0], beta2=group["betas"][1],
                    eps=group["eps"], step=b.done + 1, decay_mode=group["decay"], tau_iters=group["tau_iters"],
                    weight_decay=group["weight_decay"])
                if tables is None:  # the list-form op reads them from a tensor on the device
                    scalars = scalars.as_tensor(b.device)
            work.append((b, tables, group, scalars))
        for b, tables, group, scalars in work:
            scale = None if grad_scale is None else grad_scale.to(b.device, torch.float32, non_blocking=True)
            inf = None if found_inf is None else found_inf.to(b.device, torch.float32, non_blocking=True)
            backend = self._backend_for(b.device)
            flags = (self._seed, b.amsgrad, bool(group["maximize"]), bool(group["stochastic_rounding"]) and not b.master)
            if tables is not None:  # eager, contiguous, a kernel backend: launch from the bucket's tables
                launch = backends.launcher(backend)
                for t in tables:
                    launch(t, scalars, *b.dtypes, flags[0], flags[1], flags[2], b.master, flags[3], scale, inf)
            else:
                backends.step_function(backend)(
                    b.locals, b.grads(flat), b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, b.masters, scalars, b.ids,
                    *flags, scale, inf)
            if inf is None:
                b.steps += 1
            else:
                b.steps += (inf == 0).to(torch.float32)  # a skipped step does not count
            b.done += 1
        return loss
