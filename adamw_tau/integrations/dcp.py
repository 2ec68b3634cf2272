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
"""
from __future__ import annotations

import re

from torch.distributed.checkpoint import DefaultLoadPlanner

GROUP_KEY = re.compile(r"(^|\.)param_groups\.")


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
        try:
            plan = super().create_local_plan()
        finally:
            self.state_dict.update(held)
        self.kept = kept
        return plan
