"""State dicts in and out: torch.optim.AdamW's format, loaded without losing a bit.

[note: dtypes on load] torch's ``load_state_dict`` casts every saved state tensor to its
parameter's dtype. For a bf16 parameter that rounds an fp32 master (and fp32 moments) to
bf16, and the kernels, told the group's dtypes, would then read the wrong width. So after
torch's load each state tensor is taken again from the saved one, in the dtype AdamWTau
keeps it in: the same bits when the checkpoint came from AdamWTau, widened exactly from a
bf16 torch AdamW state, rounded to nearest even only where the group asks for narrower
states than were saved.
"""
from __future__ import annotations

import torch

from ..launch.buckets import state_dtype
from ..launch.state import plain

STATE_TENSORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_param")
GROUP_DEFAULTS = ("master_weights", "stochastic_rounding", "state_dtype", "amsgrad", "maximize", "capturable")


def packed(state_dict: dict) -> dict:
    """``state_dict()`` with plain dicts: a checkpoint loads with ``weights_only=True``."""
    return {**state_dict, "state": plain(state_dict["state"])}


def restore_dtypes(param_groups: list[dict], state: dict, saved: dict) -> None:
    """Put back the dtypes torch's load cast away (module note). ``saved``: the state dict loaded."""
    params = [p for g in param_groups for p in g["params"]]
    groups = [g for g in param_groups for _ in g["params"]]
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    for saved_id, p, group in zip(ids, params, groups):
        src = saved["state"].get(saved_id)
        if not src or p not in state:
            continue
        master = bool(group["master_weights"]) and p.dtype != torch.float32
        for key in STATE_TENSORS:
            if isinstance(src.get(key), torch.Tensor):
                dtype = torch.float32 if key == "master_param" else state_dtype(group, p, master)
                dict.__setitem__(state[p], key, src[key].to(device=p.device, dtype=dtype, copy=True))


def upgrade_groups(param_groups: list[dict], defaults: dict) -> None:
    """Groups saved by torch.optim.AdamW (or an older AdamWTau) get our keys: decay in the
    λ form they carry, the optimizer's defaults for the rest."""
    for group in param_groups:
        group.setdefault("tau_iters", None)
        group.setdefault("tau_epochs", None)
        group.setdefault("iters_per_epoch", None)
        group.setdefault("decay", "tau" if group["tau_iters"] is not None
                         else ("lambda" if group.get("weight_decay", 0.0) > 0 else "none"))
        group.setdefault("lr_peak", float(group["lr"]))
        for k in GROUP_DEFAULTS:
            group.setdefault(k, defaults.get(k, False))
