"""State dicts in and out: torch.optim.AdamW's format, loaded without losing a bit.

[note: dtypes on load] torch's ``load_state_dict`` casts every saved state tensor to its
parameter's dtype. For a bf16 parameter that rounds an fp32 master (and fp32 moments) to
bf16, and the kernels, told the group's dtypes, would then read the wrong width. So after
torch's load each state tensor is taken again from the saved one, in the dtype AdamWTau
keeps it in: the same bits when the checkpoint came from AdamWTau, widened exactly from a
bf16 torch AdamW state, rounded to nearest even only where the group asks for narrower
states than were saved.

[note: 8-bit states] A state_dict() of 8-bit states is native: uint8 codes under
``<key>_q8`` (``exp_avg_q8``, ...), their fp32 scales under ``<key>_scale`` and the format's
version under ``q8_format``, so a resumed run has the same bits. The codes are kept off the
moments' own keys on purpose: torch.optim.AdamW's load casts every state tensor to the
param's dtype and would run on the codes as values (0..255); with the codes elsewhere its
first step raises KeyError 'exp_avg' instead (before it writes anything), DCP's load says
the key is missing, and adamw_tau.integrations.dcp's planner decodes them. Version 1 (codes
under the moments' own keys) is still read. Loading re-encodes nothing that is already codes; a
floating-point moment (torch.optim.AdamW's, or an fp32-state AdamWTau's) loaded into an
8-bit group is encoded by formats.q8_blockwise (block max, x / max, thresholds: one answer),
and codes loaded into a floating-point group are decoded. ``decoded`` turns any of our state
dicts into torch.optim.AdamW's form (fp32 moments, no scales), so a user can always leave.

[note: changing the master form at a checkpoint] A state dict keeps the master as the run
kept it: ``master_param`` (fp32) or ``master_remainder`` (int16, meaningful only beside the
bf16 param it was saved with). Loading into a group whose form differs converts, exactly:

- fp32 master -> remainder group: the master is split (formats/bf16_remainder.py); the
  remainder is stored and the param is written with the format's rounding of the master.
  That changes the param's bits only at exact ties (low half 0x8000, high half even:
  ties away from zero instead of to even) and for NaN masters (0x7FC0).
- remainder -> fp32-master group: the master is the param and remainder merged; the param
  is written as the master rounded to nearest even (the fp32-master form's rule), again a
  change only at ties and NaNs.
- no master saved (torch.optim.AdamW, or a run without one): the master is the param, as
  today; a remainder starts at 0.

Both conversions read or write the param, so load the model's state dict first and the
optimizer's after it (the order torch's and Hugging Face's checkpoint code use). Loading
a remainder run into a remainder run reads nothing but the saved state: any order works.
"""
from __future__ import annotations

import torch

from ..formats import bf16_remainder, q8_blockwise
from ..launch.buckets import MASTER_KEYS, MOMENTS, master_form, state_dtype
from ..launch.sharded_scales import unplaceable
from ..launch.state import plain
from ..launch.tables import FP32_MASTER, REMAINDER_MASTER

STATE_TENSORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_param", bf16_remainder.STATE_KEY)
_FIXED_DTYPES = dict(MASTER_KEYS.values())
GROUP_DEFAULTS = ("master_weights", "stochastic_rounding", "state_dtype", "amsgrad", "maximize", "capturable",
                  "q8_min_numel")
VERSION_KEY = "q8_format"
SCALE = q8_blockwise.SCALE_SUFFIX
CODES = {key: q8_blockwise.codes_key(key) for key in MOMENTS}


def is_codes(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype == torch.uint8


# [note: storage options] How a group stores its states is the running optimizer's choice, like
# its backend: a checkpoint's values for these are not loaded over it (torch's load takes every
# other hyperparameter from the checkpoint); the saved states are converted instead.
STORAGE_OPTIONS = ("master_weights", "state_dtype", "q8_min_numel")


def storage_options(param_groups: list[dict]) -> list[dict]:
    return [{k: g[k] for k in STORAGE_OPTIONS if k in g} for g in param_groups]


def keep_storage_options(param_groups: list[dict], kept: list[dict]) -> None:
    for group, options in zip(param_groups, kept):
        group.update(options)


def check_placeable(param_groups: list[dict], state: dict) -> None:
    pid = 0
    for gi, group in enumerate(param_groups):
        for p in group["params"]:
            why = unplaceable(p, state[p]) if p in state else None
            if why:
                raise RuntimeError(f"state_dict: param group {gi}: params[{pid}]: {why}")
            pid += 1


def packed(state_dict: dict) -> dict:
    """``state_dict()`` with plain dicts: a checkpoint loads with ``weights_only=True``; 8-bit
    states carry the format's version (module note)."""
    state = plain(state_dict["state"])
    for s in state.values():
        if any(is_codes(s.get(CODES[k])) for k in MOMENTS):
            s[VERSION_KEY] = q8_blockwise.FORMAT_VERSION
    return {**state_dict, "state": state}


def saved_codes(src: dict, key: str) -> torch.Tensor | None:
    """A saved moment's 8-bit codes: under ``<key>_q8``, or (format version 1) under ``key``."""
    for k in (CODES[key], key):
        if is_codes(src.get(k)):
            return src[k]
    return None


def fp32_moment(src: dict, key: str) -> torch.Tensor:
    """A saved moment as fp32 values: decoded from codes and scales, or widened."""
    codes = saved_codes(src, key)
    if codes is not None:
        return q8_blockwise.decode(codes, src[key + SCALE].to(codes.device), q8_blockwise.signed_for(key))
    return src[key].to(torch.float32)


def decoded(state_dict: dict) -> dict:
    """``state_dict`` in torch.optim.AdamW's form: every moment fp32, no codes, scales or version."""
    state = {}
    for pid, src in state_dict["state"].items():
        out = {k: v for k, v in src.items()
               if not k.endswith(SCALE) and k not in CODES.values() and k != VERSION_KEY}
        for key in MOMENTS:
            if saved_codes(src, key) is not None:
                out[key] = fp32_moment(src, key)
        state[pid] = out
    return {**state_dict, "state": state}


def restore_dtypes(param_groups: list[dict], state: dict, saved: dict) -> None:
    """Put back the dtypes torch's load cast away (module note). ``saved``: the state dict loaded."""
    params = [p for g in param_groups for p in g["params"]]
    groups = [g for g in param_groups for _ in g["params"]]
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    for pid, (saved_id, p, group) in enumerate(zip(ids, params, groups)):
        src = saved["state"].get(saved_id)
        if not src or p not in state:
            continue
        master = master_form(group, p, f"params[{pid}]")
        sdtype = state_dtype(group, p, master)
        dict.pop(state[p], VERSION_KEY, None)
        encoded = False  # 8-bit codes encoded here from fp32 moments
        for key in STATE_TENSORS:
            if key in _FIXED_DTYPES:
                if isinstance(src.get(key), torch.Tensor):
                    dict.__setitem__(state[p], key, src[key].to(device=p.device, dtype=_FIXED_DTYPES[key], copy=True))
                continue
            codes = saved_codes(src, key)
            if codes is None and not isinstance(src.get(key), torch.Tensor):
                continue
            for stale in (key, CODES[key], key + SCALE):  # torch's load cast them all to the param's dtype
                dict.pop(state[p], stale, None)
            if sdtype == torch.uint8:
                if codes is not None:
                    scales = src[key + SCALE]
                else:
                    codes, scales = q8_blockwise.encode(src[key].to(torch.float32), q8_blockwise.signed_for(key))
                    encoded = True
                codes = codes.to(device=p.device, copy=True).contiguous()
                dict.__setitem__(state[p], q8_blockwise.moment_key(key, sdtype), codes)
                dict.__setitem__(state[p], key + SCALE, scales.to(device=p.device, dtype=torch.float32, copy=True))
            else:
                dict.__setitem__(state[p], key, fp32_moment(src, key).to(device=p.device, dtype=sdtype, copy=True))
        if encoded:
            _zero_rule(state[p], group)
        convert_master(state[p], p, master)


def _zero_rule(st: dict, group: dict) -> None:
    """The 8-bit format's rule that ties m to v (formats.q8_blockwise.zero_rule) on freshly encoded
    moments: exp_avg's zero code wherever the second moment the next step divides by has code 0."""
    m_key, v_key = CODES["exp_avg"], CODES["exp_avg_sq"]
    if group.get("amsgrad") and CODES["max_exp_avg_sq"] in st:
        v_key = CODES["max_exp_avg_sq"]
    if st.get(m_key) is not None and v_key in st:
        dict.__setitem__(st, m_key, q8_blockwise.zero_rule(st[m_key], st[v_key]))


@torch.no_grad()
def convert_master(st: dict, p: torch.Tensor, master: int) -> None:
    """Give a loaded state the master form its group keeps (module note); the other form's key goes."""
    rem_key = bf16_remainder.STATE_KEY
    if master == REMAINDER_MASTER and rem_key not in st and "master_param" in st:
        param, rem = bf16_remainder.split(st["master_param"].to(torch.float32))
        p.copy_(param)
        dict.__setitem__(st, rem_key, rem)
        dict.__delitem__(st, "master_param")
    elif master == FP32_MASTER and "master_param" not in st and rem_key in st:
        full = bf16_remainder.merge(p.detach(), st[rem_key])
        p.copy_(full.to(p.dtype))  # to nearest even: the fp32-master form's param
        dict.__setitem__(st, "master_param", full)
        dict.__delitem__(st, rem_key)


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
