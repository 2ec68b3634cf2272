"""The fused step as one registered torch op, the node torch.compile sees.

``adamw_tau::adamw_step_`` takes a bucket as tensor lists, declares what it mutates, and
steps it with the named kernel backend: it plans the launch tables (``tables.plan``,
cached by address) and launches each. Its fake kernel does nothing. In eager, the
optimizer skips this layer (measured on an H100: the custom op's Python dispatch cost
about 5.5 µs per tensor, more than the rest of step()) and launches from tables it keeps
per bucket; the op is for torch.compile, the tests and the benchmark's parity check.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..core import reference
from ..formats import registry
from . import backends, tables

_MUTATED = ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "masters", "exp_avg_scales", "exp_avg_sq_scales",
            "max_exp_avg_sq_scales")


def run_bucket(backend: str, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, scalars, param_ids,
               seed, amsgrad, maximize, stochastic_rounding, grad_scale=None, found_inf=None, exp_avg_scales=(),
               exp_avg_sq_scales=(), max_exp_avg_sq_scales=(), state_format=None, grad_coef=None) -> None:
    """Check a bucket of contiguous tensors, plan its tables and launch ``backend`` on them
    (quantized states, ``state_format``: uint8 codes, and their scales in the ``*_scales`` lists)."""
    scales = (exp_avg_scales, exp_avg_sq_scales, max_exp_avg_sq_scales)
    fmt = tables.check_bucket(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids, amsgrad,
                              scales, state_format)
    if not params:
        return
    launch = backends.launcher(backend)
    for t in tables.plan(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids,
                         tables.chunk_for(backend), scales):
        launch(t, scalars, params[0].dtype, grads[0].dtype, fmt.id, seed, amsgrad, maximize,
               tables.master_form(masters), stochastic_rounding, grad_scale, found_inf, grad_coef)


@torch.library.custom_op("adamw_tau::adamw_step_", mutates_args=_MUTATED)
def adamw_step_op(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                  max_exp_avg_sqs: list[Tensor], masters: list[Tensor], scalars: Tensor, param_ids: list[int],
                  seed: int, amsgrad: bool, maximize: bool, stochastic_rounding: bool,
                  grad_scale: Optional[Tensor], found_inf: Optional[Tensor], backend: str,
                  exp_avg_scales: list[Tensor], exp_avg_sq_scales: list[Tensor],
                  max_exp_avg_sq_scales: list[Tensor], state_format: int = -1,
                  grad_coef: Optional[Tensor] = None) -> None:
    # state_format: formats.registry's id; -1 (callers of the op from before it had one): the
    # format the states' dtype implies (registry.of_dtype). grad_coef: the clipping coefficient
    # (launch/clipping.py), applied after unscaling; None without clipping
    run_bucket(backend, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, scalars, param_ids, seed,
               amsgrad, maximize, stochastic_rounding, grad_scale, found_inf, exp_avg_scales, exp_avg_sq_scales,
               max_exp_avg_sq_scales, None if state_format < 0 else state_format, grad_coef)


@adamw_step_op.register_fake
def _(*args, **kwargs) -> None:
    return None


def contiguous_call(fn, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, *rest, state_format=None,
                    **scales):
    """Kernels index memory linearly: run them on contiguous tensors and copy results back.

    The element index that keys stochastic rounding is the row-major position, the same
    in the contiguous copy, so the bits do not depend on the layout; so are 8-bit blocks.
    """
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, *scales.values())
    if all(t.is_contiguous() for ts in lists for t in ts):
        return fn(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, *rest, state_format=state_format,
                  **scales)
    copies = [[t.contiguous() for t in ts] for ts in lists]
    fn(*copies[:6], *rest, state_format=state_format, **dict(zip(scales, copies[6:])))
    for i in (0, 2, 3, 4, 5, *range(6, len(lists))):
        for dst, src in zip(lists[i], copies[i]):
            if dst.data_ptr() != src.data_ptr():
                dst.copy_(src)


def list_step(backend: str):
    """``backend``'s step on tensor lists (any layout), through the registered op."""
    op = torch.ops.adamw_tau.adamw_step_.default

    def step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, scalars, param_ids, seed, amsgrad,
             maximize, stochastic_rounding, grad_scale=None, found_inf=None, exp_avg_scales=(), exp_avg_sq_scales=(),
             max_exp_avg_sq_scales=(), state_format=None, grad_coef=None):
        fmt = registry.resolve(state_format, exp_avgs[0].dtype if len(exp_avgs) else torch.float32)

        def call(*a, state_format, **k):
            op(*a, backend, **{n: list(v) for n, v in k.items()}, state_format=fmt.id, grad_coef=grad_coef)
        contiguous_call(call, params, grads,
                        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, scalars, list(param_ids), seed, amsgrad,
                        maximize, stochastic_rounding, grad_scale, found_inf, exp_avg_scales=exp_avg_scales,
                        exp_avg_sq_scales=exp_avg_sq_scales, max_exp_avg_sq_scales=max_exp_avg_sq_scales,
                        state_format=fmt.id)
    return step


def step_function(name: str):
    """Backend ``name``'s step on tensor lists: the reference, or the registered op."""
    if name == "reference":
        return reference.adamw_step_
    return list_step(name)
