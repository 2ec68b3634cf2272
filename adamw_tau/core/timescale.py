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


def require_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def iters_per_epoch(dataset_size: float, batch_size: float) -> float:
    """M = dataset_size / batch_size (in the same unit: examples, or tokens for LMs)."""
    return require_positive("dataset_size", dataset_size) / require_positive("batch_size", batch_size)


def tau_iter_from_lambda(lr: float, weight_decay: float) -> float:
    """tau_iter = 1 / (lr * lambda)."""
    return 1.0 / (require_positive("lr", lr) * require_positive("weight_decay", weight_decay))


def lambda_from_tau_iter(lr: float, tau_iters: float) -> float:
    """lambda = 1 / (lr * tau_iter): the torch weight_decay that gives this timescale."""
    return 1.0 / (require_positive("lr", lr) * require_positive("tau_iters", tau_iters))


def tau_epoch_from_tau_iter(tau_iters: float, iters_per_epoch: float) -> float:
    """tau_epoch = tau_iter / M."""
    return require_positive("tau_iters", tau_iters) / require_positive("iters_per_epoch", iters_per_epoch)


def tau_iter_from_tau_epoch(tau_epochs: float, iters_per_epoch: float) -> float:
    """tau_iter = tau_epoch * M."""
    return require_positive("tau_epochs", tau_epochs) * require_positive("iters_per_epoch", iters_per_epoch)


def lambda_from_tau_epoch(lr: float, tau_epochs: float, iters_per_epoch: float) -> float:
    """lambda = 1 / (lr * M * tau_epoch)."""
    return lambda_from_tau_iter(lr, tau_iter_from_tau_epoch(tau_epochs, iters_per_epoch))


def tau_epoch_from_lambda(lr: float, weight_decay: float, iters_per_epoch: float) -> float:
    """tau_epoch = 1 / (lr * lambda * M)."""
    return tau_epoch_from_tau_iter(tau_iter_from_lambda(lr, weight_decay), iters_per_epoch)
