"""Moving a tuned (lr, λ) to another dataset size, batch size and μP width, holding τ_epoch fixed.

The rule of the seeds: the best τ_epoch = 1 / (η·λ·M) stays about constant as the model and
the data grow, so λ falls as 1/M when the dataset grows and, under μP, where a hidden layer's
lr falls as 1/width_mult, that layer's λ grows as width_mult. ``adamw-tau transfer`` prints it.
"""
from __future__ import annotations

from ..core.timescale import (
    lambda_from_tau_iter,
    require_positive,
    tau_iter_from_lambda,
)

# How each group kind of ``mup_param_groups`` scales its Adam lr with width_mult (adamw_tau/scaling/mup.py):
# vector-like (biases, norm gains) and input (embeddings) keep the base lr; hidden (matrix-like)
# and output (readout) layers divide it by width_mult.
LR_WIDTH_RULES = {
    "hidden": ("η / width_mult", lambda w: 1.0 / w),
    "output": ("η / width_mult", lambda w: 1.0 / w),
    "input": ("η", lambda w: 1.0),
    "vector": ("η", lambda w: 1.0),
}
GROUP_KINDS = tuple(LR_WIDTH_RULES)


def flag_positive(flag: str, value) -> float:
    """require_positive for a command-line flag: a missing or non-numeric value is a ValueError too."""
    if value is None:
        raise ValueError(f"{flag} is missing: give it a number > 0")
    try:
        return require_positive(flag, value)
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
    lr = flag_positive("--lr", lr)
    n0 = flag_positive("--dataset-size", dataset_size)
    b0 = flag_positive("--batch-size", batch_size)
    n1 = flag_positive("--to-dataset-size", to_dataset_size)
    b1 = b0 if to_batch_size is None else flag_positive("--to-batch-size", to_batch_size)
    w = flag_positive("--width-mult", width_mult)
    if b0 > n0:
        raise ValueError(f"--batch-size {b0:g} is larger than --dataset-size {n0:g}: they must be in the same unit")
    if b1 > n1:
        raise ValueError(f"--to-batch-size {b1:g} is larger than --to-dataset-size {n1:g}: "
                         "they must be in the same unit")
    m0, m1 = n0 / b0, n1 / b1
    if weight_decay is not None:
        lam = flag_positive("--weight-decay", weight_decay)
        tau_iter0 = tau_iter_from_lambda(lr, lam)
        tau_ep = tau_iter0 / m0
    else:
        tau_ep = flag_positive("--tau-epochs", tau_epochs)
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
