"""torch.distributed.checkpoint: torch AdamW and AdamWTau checkpoints loaded into each other.

With ``StateDictOptions(flatten_optimizer_state_dict=True)`` (torchtitan's layout) every
param-group key is its own entry, ``param_groups.<param>.<key>``, and loading asks the
checkpoint for every key the live optimizer's groups have: DCP's planner raises "Missing key
in checkpoint state_dict" and ``set_optimizer_state_dict`` a KeyError for one it lacks. torch
AdamW's groups and AdamWTau's differ (AdamW: ``foreach``, ``fused``, ``differentiable``,
``decoupled_weight_decay``; AdamWTau: ``decay``, ``tau_iters``, ``tau_epochs``,
``iters_per_epoch``, ``lr_peak``, ``master_weights``, ``stochastic_rounding``,
``state_dtype``), so neither loads the other's checkpoint that way.

``GroupKeysLoadPlanner`` lets exactly those entries be missing: a param-group key the
checkpoint lacks keeps the value the optimizer was built with (DCP's own partial-load rule,
limited to hyperparameters); state tensors, model weights and every other key must be there,
as with DCP's default planner. Pass it to ``dcp.load(..., planner=GroupKeysLoadPlanner())``.

Quantized moments (formats.registry.QUANTIZED): AdamWTau keeps them as codes under the
format's key (``<moment>_q8``, ...) with scales under ``<moment>_scale``
(optim/checkpoints.py's note), so a checkpoint's moments and the live optimizer's can be in
different forms. The planner converts, as ``load_state_dict`` does: fp32 (or bf16) moments
loaded into a quantized AdamWTau are read into a temporary and encoded into its codes and
scales (``StateFormat.encode``, the same bits as ``load_state_dict``); codes loaded into torch
AdamW (or an fp32-state AdamWTau) are read with their scales and decoded into its moments.
DCP's default planner refuses both (a missing key): it never reads codes as values. Codes of
one quantized format into another are refused here (load_state_dict converts them).
"""
from __future__ import annotations

import math
import re

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from ..formats import registry

GROUP_KEY = re.compile(r"(^|\.)param_groups\.")
MOMENT = re.compile(r"(^|\.)state\..+\.(exp_avg|exp_avg_sq|max_exp_avg_sq)$")
SCALE = registry.Q8.codec.SCALE_SUFFIX  # every quantized format's scales: <moment>_scale


def _codes_format(keys, key: str) -> registry.StateFormat | None:
    """The quantized format whose codes of moment ``key`` are among ``keys``, or None."""
    return next((f for f in registry.QUANTIZED if key + f.codec.CODES_SUFFIX in keys), None)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


class Conversion:
    """One moment loaded across forms: the temporaries DCP reads into, and what to do once
    every element of them has arrived."""

    def __init__(self, temps: dict, finish):
        self.temps = temps
        self.left = {k: _local(t).numel() for k, t in temps.items()}
        self.finish = finish

    def arrived(self, key: str, n: int) -> bool:
        self.left[key] -= n
        return not any(self.left.values())


class GroupKeysLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, except that optimizer param-group keys the checkpoint lacks
    keep their current values; ``kept`` lists them after planning."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept: list[str] = []

    def create_local_plan(self):
        present = self.metadata.state_dict_metadata
        kept = sorted(k for k in self.state_dict if k not in present and GROUP_KEY.search(k))
        held = {k: self.state_dict.pop(k) for k in kept}
        self.conversions: dict[str, Conversion] = {}
        self.encoding: dict[str, dict] = {}  # per param prefix: moment -> live codes, once encoded
        self.encodes_left: dict[str, int] = {}
        suffixes = tuple(f.codec.CODES_SUFFIX for f in registry.QUANTIZED)
        for key in [k for k in self.state_dict if MOMENT.search(k)] + \
                   [k.rsplit("_", 1)[0] for k in self.state_dict if k.endswith(suffixes)
                    and MOMENT.search(k.rsplit("_", 1)[0])]:
            held.update(self._convert(key, present))
        try:
            plan = super().create_local_plan()
        finally:
            self.state_dict.update(held)
        self.kept = kept
        return plan

    def _convert(self, key: str, present: dict) -> dict:
        """Plan loading moment ``key`` (``state.<fqn>.<moment>``) across forms; the live entries
        taken out of the request, which the conversion fills in place."""
        moment = key.rsplit(".", 1)[1]
        live_fmt, saved_fmt = _codes_format(self.state_dict, key), _codes_format(present, key)
        fmt = live_fmt or saved_fmt
        codes_key, scale_key = (key + fmt.codec.CODES_SUFFIX if fmt else None), key + SCALE
        live_codes, live_values = self.state_dict.get(codes_key) if live_fmt else None, self.state_dict.get(key)
        if live_fmt and saved_fmt and live_fmt is not saved_fmt:
            raise ValueError(f"{key}: the checkpoint holds this moment as {saved_fmt.name} codes and this optimizer "
                             f"keeps {live_fmt.name} codes; load it with load_state_dict (it converts), or save "
                             "AdamWTau.torch_state_dict() (fp32 moments)")
        if live_codes is not None and codes_key not in present and key in present:
            # fp32 or bf16 moments into 8-bit codes: read them, then encode
            saved = present[key]
            # codes of the moment's shape (8-bit: a DTensor's too) take a temporary like them; flat codes
            # (several codes a byte) one of the saved moment's shape, a DTensor's sharded on dim 0 as
            # its parameter is (launch/sharded_scales.py: this rank's bytes are its shard's)
            if tuple(live_codes.shape) == tuple(saved.size):
                temp = torch.empty_like(live_codes, dtype=saved.properties.dtype)
            elif hasattr(live_codes, "to_local"):
                from torch.distributed.tensor import Shard, empty
                temp = empty(tuple(saved.size), dtype=saved.properties.dtype, device_mesh=live_codes.device_mesh,
                             placements=[Shard(0)])
            else:
                temp = torch.empty(tuple(saved.size), dtype=saved.properties.dtype, device=live_codes.device)
            out = {codes_key: self.state_dict.pop(codes_key)}
            if scale_key not in present:
                out[scale_key] = self.state_dict.pop(scale_key)
            version = key.rsplit(".", 1)[0] + ".q8_format"
            if version in self.state_dict and version not in present:
                out[version] = self.state_dict.pop(version)

            prefix = key.rsplit(".", 1)[0]
            self.encodes_left[prefix] = self.encodes_left.get(prefix, 0) + 1

            def encode(temp=temp, live_codes=out[codes_key], live_scale=out.get(scale_key, self.state_dict.get(
                    scale_key)), prefix=prefix):
                codes, scales = live_fmt.encode(_local(temp).to(torch.float32), moment)
                _local(live_codes).copy_(codes.reshape(_local(live_codes).shape))
                _local(live_scale).copy_(scales)
                self.encoding.setdefault(prefix, {})[moment] = (live_codes, live_scale, live_fmt,
                                                                _local(temp).numel())
                self.encodes_left[prefix] -= 1
                if not self.encodes_left[prefix]:
                    self._zero_rule(prefix)
            self.state_dict[key] = temp
            self.conversions[key] = Conversion({key: temp}, encode)
            return out
        if live_values is not None and key in present and isinstance(present[key], TensorStorageMetadata) \
                and present[key].properties.dtype == torch.uint8 and live_values.dtype != torch.uint8:
            raise ValueError(f"{key}: the checkpoint holds 8-bit codes under the moment's own key (AdamWTau's 8-bit "
                             "format version 1), which this optimizer would read as values. Load the checkpoint into "
                             "an AdamWTau and save AdamWTau.torch_state_dict() (fp32 moments) for torch.optim.AdamW")
        if live_values is not None and key not in present and codes_key in present:
            # codes into fp32 moments: read codes and scales, then decode
            if hasattr(live_values, "to_local") or scale_key not in present:
                raise ValueError(f"{key}: the checkpoint holds this moment as AdamWTau's 8-bit codes, which cannot be "
                                 "decoded into a sharded (DTensor) state here. Load the checkpoint into an AdamWTau "
                                 "and save AdamWTau.torch_state_dict() (fp32 moments) for torch.optim.AdamW")
            sizes = {k: present[k].size for k in (codes_key, scale_key)}
            if tuple(sizes[codes_key]) != saved_fmt.codes_shape(live_values, live_values) or sizes[scale_key] != (
                    saved_fmt.n_blocks(math.prod(live_values.shape)),):
                raise ValueError(f"{key}: the checkpoint's {saved_fmt.name} codes {tuple(sizes[codes_key])} and scales "
                                 f"{tuple(sizes[scale_key])} do not fit this moment {tuple(live_values.shape)}")
            temps = {codes_key: torch.empty(sizes[codes_key], dtype=torch.uint8, device=live_values.device),
                     scale_key: torch.empty(sizes[scale_key], dtype=torch.float32, device=live_values.device)}
            live = self.state_dict.pop(key)

            def decode(live=live, temps=temps):
                live.copy_(saved_fmt.decode(temps[codes_key], temps[scale_key], moment, live.shape).to(live.dtype))
            self.state_dict.update(temps)
            conversion = Conversion(temps, decode)
            self.conversions.update({k: conversion for k in temps})
            return {key: live}
        return {}

    def _zero_rule(self, prefix: str) -> None:
        """The 8-bit format's m-to-v rule on moments encoded here, as load_state_dict applies it
        (optim/checkpoints.py): m's zero code wherever the v the next step divides by has code 0."""
        done = self.encoding.pop(prefix, {})
        v_moment = "max_exp_avg_sq" if "max_exp_avg_sq" in done else "exp_avg_sq"
        if "exp_avg" in done and v_moment in done:
            (m, _, fmt, numel), (v, v_scales, _, _) = done["exp_avg"], done[v_moment]
            _local(m).copy_(fmt.zero_rule(_local(m), _local(v), _local(v_scales), numel))

    def commit_tensor(self, read_item, tensor) -> None:
        key = read_item.dest_index.fqn
        conversion = self.conversions.get(key)
        if conversion is not None and conversion.arrived(key, math.prod(read_item.lengths)):
            conversion.finish()
            for k in conversion.temps:
                self.state_dict.pop(k, None)
