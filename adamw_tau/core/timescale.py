"""AdamW's EMA timescale and its conversions (Wang & Aitchison, arXiv:2405.13698).

With peak learning rate eta and torch-form weight decay lambda, AdamW's weights are an
exponential moving average of recent updates with timescale

    tau_iter  = 1 / (eta * lambda)                 iterations
    tau_epoch = tau_iter / M,   M = dataset_size / batch_size   iterations per epoch

The paper finds the best tau_epoch roughly constant as model and dataset grow: lambda
must fall as the dataset grows (M grows) and, under muP (eta ~ 1/width), grow with width.
"""
from __future__ import annotations

import math


def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def iters_per_epoch(dataset_size: float, batch_size: float) -> float:
    """M = dataset_size / batch_size (in the same unit: examples, or tokens for LMs)."""
    return _positive("dataset_size", dataset_size) / _positive("batch_size", batch_size)


def tau_iter_from_lambda(lr: float, weight_decay: float) -> float:
    """tau_iter = 1 / (lr * lambda)."""
    return 1.0 / (_positive("lr", lr) * _positive("weight_decay", weight_decay))


def lambda_from_tau_iter(lr: float, tau_iters: float) -> float:
    """lambda = 1 / (lr * tau_iter): the torch weight_decay that gives this timescale."""
    return 1.0 / (_positive("lr", lr) * _positive("tau_iters", tau_iters))


def tau_epoch_from_tau_iter(tau_iters: float, iters_per_epoch: float) -> float:
    """tau_epoch = tau_iter / M."""
    return _positive("tau_iters", tau_iters) / _positive("iters_per_epoch", iters_per_epoch)


def tau_iter_from_tau_epoch(tau_epochs: float, iters_per_epoch: float) -> float:
    """tau_iter = tau_epoch * M."""
    return _positive("tau_epochs", tau_epochs) * _positive("iters_per_epoch", iters_per_epoch)


def lambda_from_tau_epoch(lr: float, tau_epochs: float, iters_per_epoch: float) -> float:
    """lambda = 1 / (lr * M * tau_epoch)."""
    return lambda_from_tau_iter(lr, tau_iter_from_tau_epoch(tau_epochs, iters_per_epoch))


def tau_epoch_from_lambda(lr: float, weight_decay: float, iters_per_epoch: float) -> float:
    """tau_epoch = 1 / (lr * lambda * M)."""
    return tau_epoch_from_tau_iter(tau_iter_from_lambda(lr, weight_decay), iters_per_epoch)


# --- moving a tuned run to another scale ----------------------------------------------------

# How each group kind of ``mup_param_groups`` scales its Adam lr with width_mult (adamw_tau/mup.py):
# vector-like (biases, norm gains) and input (embeddings) keep the base lr; hidden (matrix-like)
# and output (readout) layers divide it by width_mult.
LR_WIDTH_RULES = {
    "hidden": ("η / width_mult", lambda w: 1.0 / w),
    "output": ("η / width_mult", lambda w: 1.0 / w),
    "input": ("η", lambda w: 1.0),
    "vector": ("η", lambda w: 1.0),
}
GROUP_KINDS = tuple(LR_WIDTH_RULES)


def _flag_positive(flag: str, value) -> float:
    """_positive for a command-line flag: a missing or non-numeric value is a ValueError too."""
    if value is None:
        raise ValueError(f"{flag} is missing: give it a number > 0")
    try:
        return _positive(flag, value)
    except TypeError as e:
        raise ValueError(str(e)) from None


def transfer(lr: float, *, dataset_size: float, batch_size: float, to_dataset_size: float,
             weight_decay: float | None = None, tau_epochs: float | None = None,
             to_batch_size: float | None = None, width_mult: float = 1.0) -> dict:
    """Move a tuned (lr, λ) to another dataset size, batch size and μP width, holding τ_epoch fixed.

    The tuned run: peak ``lr`` η and ``weight_decay`` λ (torch form) or ``tau_epochs``, trained with
    ``batch_size`` on ``dataset_size`` (the same unit: examples, or tokens for LMs). The target:
    ``to_dataset_size``, ``to_batch_size`` (default: unchanged) and ``width_mult`` = target width /
    tuned width under μP (default 1). Per group kind of ``mup_param_groups``:

        η_new    = η · lr_rule(width_mult)           (hidden, output: ÷ width_mult; input, vector: ×1)
        M_new    = to_dataset_size / to_batch_size
        τ_iter'  = τ_epoch · M_new                    (the same for every kind)
        λ_new    = 1 / (η_new · τ_iter')  =  λ · (M / M_new) · (η / η_new)

    The lr is not rescaled for a change of batch size (no rule for that is assumed); if you change
    it yourself, keep τ_epoch and take λ = 1 / (η_yours · τ_iter'). ``mup_param_groups`` does not
    decay vector-like parameters unless told to; their row is the λ to use if you do.
    """
    given = [f for f, v in (("--weight-decay", weight_decay), ("--tau-epochs", tau_epochs)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of --weight-decay (λ of the tuned run) or --tau-epochs "
                         f"(its τ_epoch); got {' and '.join(given) if given else 'neither'}")
    lr = _flag_positive("--lr", lr)
    n0 = _flag_positive("--dataset-size", dataset_size)
    b0 = _flag_positive("--batch-size", batch_size)
    n1 = _flag_positive("--to-dataset-size", to_dataset_size)
    b1 = b0 if to_batch_size is None else _flag_positive("--to-batch-size", to_batch_size)
    w = _flag_positive("--width-mult", width_mult)
    if b0 > n0:
        raise ValueError(f"--batch-size {b0:g} is larger than --dataset-size {n0:g}: they must be in the same unit")
    if b1 > n1:
        raise ValueError(f"--to-batch-size {b1:g} is larger than --to-dataset-size {n1:g}: "
                         "they must be in the same unit")
    m0, m1 = n0 / b0, n1 / b1
    if weight_decay is not None:
        lam = _flag_positive("--weight-decay", weight_decay)
        tau_iter0 = tau_iter_from_lambda(lr, lam)
        tau_ep = tau_iter0 / m0
    else:
        tau_ep = _flag_positive("--tau-epochs", tau_epochs)
        tau_iter0 = tau_ep * m0
        lam = lambda_from_tau_iter(lr, tau_iter0)
    tau_iter1 = tau_ep * m1
    groups = {}
    for kind, (rule, f) in LR_WIDTH_RULES.items():
        lr1 = lr * f(w)
        groups[kind] = {"lr": lr1, "weight_decay": lambda_from_tau_iter(lr1, tau_iter1), "tau_iters": tau_iter1,
                        "lr_rule": rule}
    return {"from": {"lr": lr, "weight_decay": lam, "tau_iters": tau_iter0, "tau_epochs": tau_ep,
                     "dataset_size": n0, "batch_size": b0, "iters_per_epoch": m0},
            "to": {"dataset_size": n1, "batch_size": b1, "iters_per_epoch": m1, "width_mult": w,
                   "tau_epochs": tau_ep, "tau_iters": tau_iter1},
            "groups": groups}
