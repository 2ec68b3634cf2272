"""Clear errors for bad input, raised before any tensor is touched.

Each error says what is wrong, where (which group, which parameter) and what to do. The
optimizer calls these at construction, when a state dict is loaded, and in step() only
when something they check can have changed (step_plan.py's note on host work).
"""
from __future__ import annotations

import math
import numbers

import torch

from ..core.timescale import tau_iter_from_tau_epoch
from ..formats import registry
from ..formats.q8_blockwise import READ_VERSIONS

DECAY_KEYS = ("tau_epochs", "iters_per_epoch", "tau_iters", "weight_decay")
PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
STATE_DTYPES = registry.STATE_DTYPE_OPTIONS  # the quantized formats' names among them: formats.registry
_QUANTIZED = " or ".join(f'"{f.option}"' for f in registry.QUANTIZED)


def finite(name: str, value, *, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float, if it is a finite number >= minimum (> with strict)."""
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a Python number, got a tensor; pass float({name})")
    if not isinstance(value, numbers.Real):  # a string would pass float()
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def check_seed(seed) -> None:
    """The stochastic-rounding seed: an int in [0, 2**63), the range every backend takes as is
    (the C++ op's ``int`` is int64; Triton and the reference would mask a larger one)."""
    if type(seed) is not int:  # noqa: E721 (a bool is an int subclass, and not a seed)
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}; take seed % 2**63 to keep its low bits")


def check_max_grad_norm(value, step_in_backward: bool) -> float | None:
    """``max_grad_norm``: None (no clipping) or a finite number >= 0, as a float."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"AdamWTau: max_grad_norm must be a number or None, got {value!r}")
    c = finite("AdamWTau: max_grad_norm", value)
    if step_in_backward:
        raise ValueError("AdamWTau: max_grad_norm needs every gradient before the first parameter steps, and "
                         "step_in_backward=True steps each one as soon as its gradient is ready; use one of them")
    return c


def decay_spec(src: dict, where: str) -> dict | None:
    """The decay form ``src`` names, normalised, or None if it names none."""
    given = {k: src[k] for k in DECAY_KEYS if src.get(k) is not None}
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
        tau_e = finite(f"{where}: tau_epochs", given["tau_epochs"], strict=True)
        m = finite(f"{where}: iters_per_epoch", given["iters_per_epoch"], strict=True)
        spec.update(decay="tau", tau_epochs=tau_e, iters_per_epoch=m, tau_iters=tau_iter_from_tau_epoch(tau_e, m))
    elif forms[0] == "tau_iters":
        spec.update(decay="tau", tau_iters=finite(f"{where}: tau_iters", given["tau_iters"], strict=True))
    else:
        wd = finite(f"{where}: weight_decay", given["weight_decay"])
        spec.update(decay="lambda" if wd > 0 else "none", weight_decay=wd)
    return spec


DECAY_FIELDS = ("decay", "tau_iters", "tau_epochs", "iters_per_epoch", "weight_decay")


def decay_fields(group: dict) -> tuple:
    return tuple(group.get(k) for k in DECAY_FIELDS)


def tau_lambda(group: dict) -> float:
    """The torch-form λ a τ group shows: the one that gives its τ at lr_peak."""
    return 1.0 / (group["lr_peak"] * group["tau_iters"]) if group["lr_peak"] > 0 else 0.0


def settle_decay(group: dict, before: tuple | None, where: str) -> None:
    """The decay a group's keys give, after a user wrote some (``before``: ``decay_fields`` when
    last seen; None for a group just built or loaded). The rule (docs/numerics.md):

    - λ and no-decay groups read ``weight_decay``, as torch does: > 0 is the λ form, 0 none;
    - τ groups read ``tau_iters``; ``tau_epochs`` x ``iters_per_epoch``, when given, is the same
      τ, and whichever of the two views was written, the other follows (both written must
      agree); ``weight_decay`` shows the λ that gives the τ at lr_peak and is not read, so a
      write to it raises;
    - a τ key written into a λ or no-decay group raises (the form is chosen at construction).

    Writes the derived keys (``decay``, ``weight_decay``; ``tau_iters`` or ``tau_epochs``) so the
    group shows what applies; raises before any tensor is written."""
    mode = group.get("decay")
    old = dict(zip(DECAY_FIELDS, before)) if before is not None else None
    if mode == "tau":
        if old is not None and old["decay"] == "tau" and group.get("weight_decay") != old["weight_decay"]:
            raise ValueError(
                f"{where}: weight_decay was set to {group.get('weight_decay')!r}, but this group decays in τ form "
                f"(tau_iters={group['tau_iters']!r}), where weight_decay only shows the λ that gives that τ at "
                "lr_peak and is not read. Change the decay through tau_iters (or tau_epochs), or build the group "
                "with weight_decay=λ to schedule λ")
        tau = finite(f"{where}: tau_iters", group.get("tau_iters"), strict=True)
        tau_e, m = group.get("tau_epochs"), group.get("iters_per_epoch")
        if tau_e is not None or m is not None:
            tau_e = finite(f"{where}: tau_epochs", tau_e, strict=True)
            m = finite(f"{where}: iters_per_epoch", m, strict=True)
            implied = tau_iter_from_tau_epoch(tau_e, m)
            if not math.isclose(implied, tau, rel_tol=1e-12):  # tau_iters / M * M may round
                epochs_written = old is not None and (tau_e, m) != (old["tau_epochs"], old["iters_per_epoch"])
                if old is not None and tau == old["tau_iters"] and epochs_written:
                    tau = implied  # the epoch view written: tau_iters follows
                elif old is not None and not epochs_written:
                    tau_e = tau / m  # tau_iters written: the epoch view follows
                else:
                    raise ValueError(f"{where}: tau_epochs x iters_per_epoch = {tau_e!r} x {m!r} = {implied!r} "
                                     f"disagrees with tau_iters = {tau!r}; write one of the two (the other follows), "
                                     "or set tau_epochs and iters_per_epoch to None")
            group["tau_epochs"], group["iters_per_epoch"] = tau_e, m
        group["tau_iters"] = tau
        group["weight_decay"] = tau_lambda(group)
    elif mode in ("lambda", "none"):
        for key in ("tau_iters", "tau_epochs", "iters_per_epoch"):
            if group.get(key) is not None:
                raise ValueError(f"{where}: {key} is set to {group[key]!r}, but this group decays in λ form "
                                 "(weight_decay), which does not read it; schedule weight_decay, or build the "
                                 f"group with {key}=... for the τ form")
        wd = finite(f"{where}: weight_decay", group.get("weight_decay"))
        group["decay"] = "lambda" if wd > 0 else "none"
    else:
        raise ValueError(f"{where}: decay must be 'tau', 'lambda' or 'none' (derived from how the group was built), "
                         f"got {mode!r}")


def check_torch_switches(src: dict, where: str) -> None:
    """torch.optim.AdamW's implementation switches, as an optimizer argument or a group key.

    foreach and fused: None, True or False, and nothing else (a string such as "yes" is an
    error, not true). They choose among torch's implementations; AdamWTau has one, its own
    backend, which gives the same bits whatever they say. differentiable: only False.
    """
    for name in ("foreach", "fused"):
        value = src.get(name)
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{where}: {name} must be None, True or False, got {value!r}; AdamWTau runs its own "
                            f"kernels whatever {name} says, so leave it out or pass a bool")
    value = src.get("differentiable", False)
    if not isinstance(value, bool):
        raise TypeError(f"{where}: differentiable must be True or False, got {value!r}")
    if value:
        raise ValueError(f"{where}: differentiable=True is not supported: AdamWTau's kernels update parameters in "
                         "place, outside autograd, so no gradient flows through step(). To differentiate through "
                         "the optimizer step use torch.optim.AdamW(differentiable=True); otherwise drop the argument")


def check_lr(lr, where: str) -> None:
    """A finite number >= 0, or a one-element floating-point tensor (read on the device)."""
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise TypeError(f"{where}: lr as a tensor must hold one floating-point value, got shape "
                            f"{tuple(lr.shape)} and dtype {lr.dtype}")
    else:
        finite(f"{where}: lr", lr)


def check_hyper(group: dict, where: str) -> None:
    """lr, eps, betas, master_weights, state_dtype, lr_peak, and torch's switches if the group names them."""
    check_lr(group["lr"], where)
    check_torch_switches(group, where)
    finite(f"{where}: eps", group["eps"])
    betas = group["betas"]
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        if finite(f"{where}: betas[{i}]", b) >= 1.0:
            raise ValueError(f"{where}: betas[{i}] must be in [0, 1), got {b!r}")
    mw = group.get("master_weights", False)
    if not (isinstance(mw, bool) or mw == "remainder"):
        raise TypeError(f"{where}: master_weights must be True, False or 'remainder' (bf16 params: the fp32 "
                        f"master kept as the param plus a 16-bit remainder), got {mw!r}")
    sd = group["state_dtype"]
    if not any(sd is ok or (isinstance(sd, str) and sd == ok) for ok in STATE_DTYPES):
        hint = f" (the quantized states are spelled {_QUANTIZED})" if isinstance(sd, str) else ""
        raise TypeError(f"{where}: state_dtype must be None, torch.float32, torch.bfloat16 or {_QUANTIZED}, "
                        f"got {sd!r}{hint}")
    for name in ("min_quantized_numel", "q8_min_numel"):  # q8_min_numel: the old name
        size = group.get(name)
        if size is not None and (type(size) is not int or size < 0):  # noqa: E721 (a bool is not a count)
            raise TypeError(f"{where}: {name} (the minimum size, q8_min_numel its old name) must be an int >= 0 "
                            f"(tensors with fewer elements keep fp32 states "
                            f"under a quantized state_dtype, {_QUANTIZED}), got {size!r}")
    if "lr_peak" in group:
        finite(f"{where}: lr_peak", group["lr_peak"])


def check_params(params: list, where: str, names: list | None = None) -> None:
    """Dense real float32/bfloat16/float16 tensors only, each once: a tensor given twice would be
    stepped twice per step with one step count (torch warns; AdamWTau refuses)."""
    first: dict[int, int] = {}
    for i, p in enumerate(params):
        j = first.setdefault(id(p), i)
        if j != i:
            name = f" ({names[i]!r})" if names is not None and i < len(names) else ""
            raise ValueError(f"{where}: params[{i}]{name} is params[{j}], the same tensor given twice; it would be "
                             "updated twice in one step. Give each parameter once (deduplicate, e.g. with "
                             "dict.fromkeys(params))")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{where}: params[{i}] is a {type(p).__name__}, not a tensor")
        if p.is_complex():
            raise TypeError(f"{where}: params[{i}] is complex ({p.dtype}); AdamWTau updates real "
                            "tensors: register torch.view_as_real(p) as the parameter instead")
        if p.dtype not in PARAM_DTYPES:
            raise TypeError(f"{where}: params[{i}] has dtype {p.dtype}; AdamWTau updates float32, "
                            "bfloat16 and float16 parameters (use torch.optim.AdamW for others)")
        if p.is_sparse:
            raise TypeError(f"{where}: params[{i}] is sparse; AdamWTau updates dense tensors")


def check_grads(param_groups: list[dict]) -> None:
    """Each gradient dense, of its parameter's shape and device, and a float dtype we step."""
    pid = 0
    for gi, group in enumerate(param_groups):
        for p in group["params"]:
            g = p.grad
            if g is not None and (g.is_sparse or g.shape != p.shape or g.device != p.device
                                  or g.dtype not in PARAM_DTYPES):
                where = f"param group {gi}: params[{pid}]"
                if g.is_sparse:
                    raise RuntimeError(f"{where} has a sparse gradient; AdamWTau does not support sparse "
                                       "gradients (use torch.optim.SparseAdam)")
                if g.dtype not in PARAM_DTYPES:
                    raise TypeError(f"{where} has a gradient of dtype {g.dtype}")
                raise RuntimeError(f"{where} has a gradient of shape {tuple(g.shape)} on {g.device}, but "
                                   f"the parameter is {tuple(p.shape)} on {p.device}")
            pid += 1


def check_state_dict(param_groups: list[dict], state_dict: dict) -> None:
    """A checkpoint's groups, parameter count and state shapes fit this optimizer."""
    groups = state_dict.get("param_groups", [])
    if len(groups) != len(param_groups):
        raise ValueError(f"load_state_dict: the checkpoint has {len(groups)} param groups, this optimizer "
                         f"{len(param_groups)}; build the optimizer with the same groups as the one saved")
    params = [p for g in param_groups for p in g["params"]]
    ids = [i for g in groups for i in g["params"]]
    if len(ids) != len(params):
        raise ValueError(f"load_state_dict: the checkpoint holds {len(ids)} parameters, this optimizer "
                         f"{len(params)}; build the optimizer over the same parameters as the one saved")
    for saved_id, p in zip(ids, params):
        saved = state_dict.get("state", {}).get(saved_id, {})
        owned = check_quantized_state(saved, p, saved_id)
        for key, value in saved.items():
            if key in owned:
                continue  # check_quantized_state
            if key != "step" and isinstance(value, torch.Tensor) and value.shape != p.shape:
                raise ValueError(f"load_state_dict: state {key!r} of parameter {saved_id} has shape "
                                 f"{tuple(value.shape)} but the parameter is {tuple(p.shape)}; the checkpoint "
                                 "belongs to another model")


def check_quantized_state(saved: dict, p: torch.Tensor, saved_id) -> set:
    """A saved parameter's quantized moments (formats.registry): the 8-bit format version this
    code reads, and for every moment held as codes, codes of the format's size and its fp32
    scales, one per block of the parameter. Returns the keys it checked."""
    version = saved.get("q8_format")
    if version is not None and version not in READ_VERSIONS:
        raise ValueError(f"load_state_dict: parameter {saved_id} holds 8-bit states of format version {version!r}; "
                         f"this adamw_tau reads versions {READ_VERSIONS}: load it with the adamw_tau that saved it "
                         "and save AdamWTau.torch_state_dict() (fp32 moments), which loads anywhere")
    local = p.to_local() if hasattr(p, "to_local") else p
    owned = set()
    for key in registry.MOMENTS:
        fmt = registry.present(saved, key)
        if fmt is None or not fmt.quantized:
            continue
        codes_key = fmt.key(key) if fmt.key(key) in saved else key  # 8-bit format version 1: the moment's key
        codes = saved[codes_key]
        owned |= {codes_key, fmt.scale_key(key)}
        scale = saved.get(fmt.scale_key(key))
        scale = scale.to_local() if hasattr(scale, "to_local") else scale  # a DTensor's: this rank's blocks
        blocks = fmt.n_blocks(local.numel())
        if not (isinstance(scale, torch.Tensor) and scale.is_floating_point() and scale.shape == (blocks,)):
            got = f"shape {tuple(scale.shape)}" if isinstance(scale, torch.Tensor) else repr(scale)
            raise ValueError(f"load_state_dict: parameter {saved_id}'s {fmt.name} {key!r} needs "
                             f"{fmt.scale_key(key)!r}, {blocks} fp32 scales (one per {fmt.block} elements), got "
                             f"{got}; the checkpoint is incomplete or belongs to another model")
        shape = tuple(fmt.codes_shape(p, local))
        if tuple(codes.shape) != shape:
            raise ValueError(f"load_state_dict: state {codes_key!r} of parameter {saved_id} has shape "
                             f"{tuple(codes.shape)} but the parameter's {fmt.name} codes have {shape}; the "
                             "checkpoint belongs to another model")
    return owned
