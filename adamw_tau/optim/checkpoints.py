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

from ..formats import bf16_remainder, q8_blockwise, registry
from ..formats.registry import MOMENTS
from ..launch.buckets import MASTER_KEYS, master_form, state_format
from ..launch.sharded_scales import dtensor_module, is_dtensor, local, placed, unplaceable
from ..launch.state import plain
from ..launch.tables import FP32_MASTER, REMAINDER_MASTER

STATE_TENSORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_param", bf16_remainder.STATE_KEY)
_FIXED_DTYPES = dict(MASTER_KEYS.values())
GROUP_DEFAULTS = ("master_weights", "stochastic_rounding", "state_dtype", "amsgrad", "maximize", "capturable",
                  "min_quantized_numel")
VERSION_KEY = "q8_format"
# every key a quantized format keeps a moment under: codes and scales
_QUANTIZED_KEYS = {k for fmt in registry.QUANTIZED for m in MOMENTS for k in fmt.keys(m)}


# [note: storage options] How a group stores its states is the running optimizer's choice, like
# its backend: a checkpoint's values for these are not loaded over it (torch's load takes every
# other hyperparameter from the checkpoint); the saved states are converted instead.
STORAGE_OPTIONS = ("master_weights", "state_dtype", "min_quantized_numel", "q8_min_numel")


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
        if any(registry.present(s, k) is registry.Q8 for k in MOMENTS):
            s[VERSION_KEY] = q8_blockwise.FORMAT_VERSION
    return {**state_dict, "state": state}


def saved_codes(src: dict, key: str) -> tuple[registry.StateFormat, torch.Tensor] | None:
    """A saved moment's codes and their format: under the format's key (``<key>_q8``,
    ...), or (8-bit format version 1) under ``key``; None for values."""
    fmt = registry.present(src, key)
    if fmt is None or not fmt.quantized:
        return None
    return fmt, src[fmt.key(key)] if fmt.key(key) in src else src[key]


def fp32_moment(src: dict, key: str, shape, p: torch.Tensor | None = None) -> torch.Tensor:
    """A saved moment as fp32 values of ``shape``: decoded from codes and scales, or widened.
    A DTensor parameter ``p``'s codes (a DTensor whose shards are p's, launch/sharded_scales.py)
    decode shard by shard into a DTensor of p's placement."""
    found = saved_codes(src, key)
    if found is None:
        return src[key].to(torch.float32)
    fmt, codes = found
    scales = src[fmt.scale_key(key)]
    if is_dtensor(codes) and is_dtensor(p):
        values = fmt.decode(local(codes), local(scales).to(local(codes).device), key, local(p).shape)
        return like_param(p, values)
    return fmt.decode(codes, scales.to(codes.device), key, shape)


def like_param(p: torch.Tensor, shard: torch.Tensor) -> torch.Tensor:
    """``shard`` (this rank's, p's local shape) as a DTensor of DTensor ``p``'s placement."""
    dt = dtensor_module()
    return dt.DTensor.from_local(shard, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                 stride=p.stride())


def encoded(fmt: registry.StateFormat, values: torch.Tensor, key: str, p: torch.Tensor) -> tuple:
    """(main tensor, scales or None) of fp32 moment ``values`` for parameter ``p``. A DTensor
    ``p``'s are encoded shard by shard (its local blocks are the ones the kernels step) and
    placed as a fresh state is (launch/sharded_scales.py)."""
    if not is_dtensor(p):
        return fmt.encode(values, key)
    dt = dtensor_module()
    if not is_dtensor(values):  # a plain whole moment (the same on every rank): this rank's shard of it
        values = dt.distribute_tensor(values, p.device_mesh, p.placements)
    elif tuple(values.placements) != tuple(p.placements):
        values = values.redistribute(p.device_mesh, p.placements)
    main, scales = fmt.encode(local(values), key)
    if not fmt.quantized or tuple(fmt.codes_shape(p, p)) == tuple(p.shape):
        main = like_param(p, main.reshape(local(p).shape))
    else:
        main = placed(p, fmt, fmt.key(key), main)
    return main, None if scales is None else placed(p, fmt, fmt.scale_key(key), scales)


def decoded(state_dict: dict, params=None) -> dict:
    """``state_dict`` in torch.optim.AdamW's form: every moment fp32, no codes, scales or version.
    ``params``: saved id -> the parameter (its shape is needed for codes that are flat; a
    DTensor's codes decode into a DTensor of its placement; without it a moment decodes to the
    shape of its codes: 8-bit's)."""
    state = {}
    for pid, src in state_dict["state"].items():
        out = {k: v for k, v in src.items() if k not in _QUANTIZED_KEYS and k != VERSION_KEY}
        for key in MOMENTS:
            found = saved_codes(src, key)
            if found is not None:
                p = params[pid] if params is not None else None
                out[key] = fp32_moment(src, key, found[1].shape if p is None else p.shape, p)
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
        fmt = state_format(group, p, master)
        dict.pop(state[p], VERSION_KEY, None)
        encoded_here = False  # codes encoded here from fp32 moments (or another format's codes)
        for key in STATE_TENSORS:
            if key in _FIXED_DTYPES:
                if isinstance(src.get(key), torch.Tensor):
                    dict.__setitem__(state[p], key, src[key].to(device=p.device, dtype=_FIXED_DTYPES[key], copy=True))
                continue
            found = saved_codes(src, key)
            if found is None and not isinstance(src.get(key), torch.Tensor):
                continue
            for stale in (key, *(k for f in registry.QUANTIZED for k in f.keys(key))):
                dict.pop(state[p], stale, None)  # torch's load cast them all to the param's dtype
            if found is not None and found[0] is fmt:  # codes of this format: the same bits
                main, scales = found[1], src[fmt.scale_key(key)]
            else:
                main, scales = encoded(fmt, fp32_moment(src, key, p.shape, p), key, p)
                encoded_here = encoded_here or fmt.quantized
            main = main.to(device=p.device, copy=True)
            main = main if is_dtensor(main) else main.contiguous()
            dict.__setitem__(state[p], fmt.key(key), main)
            if scales is not None:
                dict.__setitem__(state[p], fmt.scale_key(key), scales.to(device=p.device, dtype=torch.float32,
                                                                          copy=True))
        if encoded_here:
            _zero_rule(state[p], group, fmt, local(p).numel())
        convert_master(state[p], p, master)


def _zero_rule(st: dict, group: dict, fmt: registry.StateFormat, numel: int) -> None:
    """The quantized format's rule that ties m to v (StateFormat.zero_rule) on freshly encoded
    moments: exp_avg's zero code wherever the second moment the next step divides by decodes to 0."""
    v = "max_exp_avg_sq" if group.get("amsgrad") and fmt.key("max_exp_avg_sq") in st else "exp_avg_sq"
    m_key = fmt.key("exp_avg")
    if st.get(m_key) is not None and fmt.key(v) in st:
        m = local(st[m_key])  # a DTensor's shard by shard: its local blocks are the whole tensor's
        m.copy_(fmt.zero_rule(m, local(st[fmt.key(v)]), local(st[fmt.scale_key(v)]), numel).reshape(m.shape))


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
        if "min_quantized_numel" not in group and "q8_min_numel" in group:  # the old name
            group["min_quantized_numel"] = group["q8_min_numel"]
        for k in GROUP_DEFAULTS:
            group.setdefault(k, defaults.get(k, False))
