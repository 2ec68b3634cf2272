"""timm's ``create_optimizer_v2`` with AdamWTau: ``register()`` adds "adamwtau" to its registry.

timm reads an optimizer name as "modifier_name" (``lookahead_adamw``), so the name has no
underscore. It drops ``betas`` unless the optimizer says it takes them, so we do. With a
model and ``weight_decay > 0`` it splits the parameters, biases and other 1-D tensors (and the
model's ``no_weight_decay()`` names) into a ``weight_decay=0.0`` group, and passes 0 as the
optimizer's own ``weight_decay``: the decay lives in the groups.

τ: pass ``tau_iters=`` (or ``tau_epochs=`` with ``iters_per_epoch=``) beside ``weight_decay``.
timm's ``weight_decay`` then only picks who decays (its split, which it makes only when
``weight_decay > 0``); the groups it decays take the τ in its place.

``layer_decay``: timm gives each layer's group an ``lr_scale`` that its schedulers multiply into
the group's lr. The τ given holds in every group, whatever its scale: each group's ``lr_peak``
is ``lr * lr_scale``, the peak lr it really gets, so lr_t / lr_peak is the schedule's shape alone
(the τ form's rule: the schedule shapes the decay, the lr's size does not).
"""
from __future__ import annotations

from ..optim.optimizer import AdamWTau
from .requires import require

NAME = "adamwtau"
TAU_KEYS = ("tau_iters", "tau_epochs", "iters_per_epoch")


def create(params, lr: float = 1e-3, weight_decay: float = 0.0, **kwargs) -> AdamWTau:
    """AdamWTau as timm's registry calls it: ``create(groups, weight_decay=0., lr=..., **kwargs)``."""
    tau = {k: kwargs.pop(k) for k in TAU_KEYS if kwargs.get(k) is not None}
    params = list(params)
    if params and isinstance(params[0], dict):
        # layer_decay's groups: the peak lr each really gets, which timm's schedulers scale
        params = [{"lr_peak": g.get("lr", lr) * g["lr_scale"], **g} if "lr_scale" in g else g for g in params]
    if not tau:
        return AdamWTau(params, lr, weight_decay=weight_decay, **kwargs)
    if params and isinstance(params[0], dict):
        if not any(g.get("weight_decay", weight_decay) > 0 for g in params):
            raise ValueError("adamwtau: tau given but timm decays no group: it splits off biases and norms only when "
                             "create_optimizer_v2 gets weight_decay > 0. Pass weight_decay=<any value > 0> with "
                             f"{', '.join(tau)}: the groups timm decays then take the tau, the others none")
        # a decayed group names no decay of its own: it takes the optimizer's tau
        params = [{k: v for k, v in g.items() if k != "weight_decay"} if g.get("weight_decay", weight_decay) > 0
                  else g for g in params]
    return AdamWTau(params, lr, **tau, **kwargs)


def register() -> None:
    """Add "adamwtau" to timm's default optimizer registry (idempotent)."""
    require("timm", "timm")
    from timm.optim import OptimInfo, list_optimizers
    from timm.optim._optim_factory import default_registry  # timm exports no public handle to it

    if NAME in list_optimizers():
        return
    default_registry.register(OptimInfo(name=NAME, opt_class=create, has_eps=True, has_betas=True,
                                        description="AdamWTau: fused AdamW, weight decay as an EMA timescale tau"))
