"""The fused step as registered torch ops, so torch.compile sees them as single nodes.

``adamw_tau::adamw_step_`` is declared once in C++ (csrc/ops.cpp, ``TORCH_LIBRARY``) and
implemented per device there; ``adamw_tau::triton_adamw_step_`` is declared here. Both
mutate their tensor lists in place and return nothing; their fake kernels do nothing.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

_MUTATED = ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "masters")


@torch.library.custom_op("adamw_tau::triton_adamw_step_", mutates_args=_MUTATED)
def _triton_op(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
               max_exp_avg_sqs: list[Tensor], masters: list[Tensor], scalars: Tensor, param_ids: list[int],
               seed: int, amsgrad: bool, maximize: bool, stochastic_rounding: bool,
               grad_scale: Optional[Tensor], found_inf: Optional[Tensor]) -> None:
    from .triton_kernels.adamw_fused import adamw_fused_step_
    adamw_fused_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, scalars, param_ids,
                      seed, amsgrad, maximize, stochastic_rounding, grad_scale, found_inf)


@_triton_op.register_fake
def _(*args, **kwargs) -> None:
    return None


def _contiguous_call(op, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, *rest):
    """Kernels index memory linearly: run them on contiguous tensors and copy results back.

    The element index that keys stochastic rounding is the row-major position, the same
    in the contiguous copy, so the bits do not depend on the layout.
    """
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters)
    if all(t.is_contiguous() for ts in lists for t in ts):
        return op(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, *rest)
    copies = [[t.contiguous() for t in ts] for ts in lists]
    op(*copies, *rest)
    for i in (0, 2, 3, 4, 5):
        for dst, src in zip(lists[i], copies[i]):
            if dst.data_ptr() != src.data_ptr():
                dst.copy_(src)


triton_op = torch.ops.adamw_tau.triton_adamw_step_


def triton_adamw_step_(*args):
    return _contiguous_call(triton_op, *args)


def extension_op():
    """The bare op; AdamWTau resolved its backend, which built and loaded the extension."""
    return torch.ops.adamw_tau.adamw_step_


def extension_adamw_step_(*args):
    from . import extension
    extension.load(cuda=args[0][0].is_cuda if args[0] else False)
    return _contiguous_call(torch.ops.adamw_tau.adamw_step_, *args)
