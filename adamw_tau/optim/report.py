"""What an optimizer's groups amount to in τ and λ terms, for ``AdamWTau.timescales()``."""
from __future__ import annotations

import math

from ..core.timescale import tau_epoch_from_tau_iter


def timescales(param_groups: list[dict]) -> list[dict]:
    """Each group's decay: its form, effective tau_iter and tau_epoch, and torch-equivalent lambda.

    tau_iter = 1 / (lr_peak * lambda) for the lambda form; inf with no decay. tau_epoch
    needs iters_per_epoch (given with tau_epochs); None otherwise.
    """
    out = []
    for group in param_groups:
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
