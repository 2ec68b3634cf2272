"""The fixed parity cases every CI backend runs (tests/launch/test_extension.py,
test_triton.py, tests/core/test_reference.py): every dtype path under each flag set below, on
hard data, with the scalars reaching the kernel as a tensor and by value.

``HARD_CASES`` is the full product (the full tier runs it); ``FAST_HARD_CASES`` the covering
set of it the fast tier runs (``covering.pairwise``: every pair of param dtype, state format,
master form, rounding, flag set and scalar mode, and every path at least once, on every
backend).
"""
from __future__ import annotations

import torch

from .covering import pairwise
from .parity import PATHS, SCALAR_MODES

# flag sets: amsgrad, maximize, decay form, GradScaler scale (two not powers of two), betas
# (zeros among them), eps (0 among them), a skipped step (found_inf = 1)
FLAG_SETS = {
    "plain": dict(amsgrad=False, maximize=False, decay="tau", grad_scale=None, betas=(0.9, 0.999), eps=1e-8),
    "amsgrad_scale3_beta1_0_eps0": dict(amsgrad=True, maximize=True, decay="lambda", grad_scale=3.0,
                                        betas=(0.0, 0.95), eps=0.0),
    "amsgrad_skip_beta2_0": dict(amsgrad=True, maximize=False, decay="none", grad_scale=65536.0, betas=(0.5, 0.0),
                                 eps=1e-30, skip_step=2),
    "betas_0_scale0.7": dict(amsgrad=False, maximize=True, decay="tau", grad_scale=0.7, betas=(0.0, 0.0), eps=0.0),
}

HARD_CASES = [(path, case, scalars) for path in PATHS for case in FLAG_SETS for scalars in SCALAR_MODES]


def factors(path: str, case: str, scalars: str) -> dict:
    """A hard case as the factors its covering set pairs: the path's parts, not its name."""
    p = PATHS[path]
    return dict(path=path, param=str(p.param_dtype), state=str(p.state_dtype), master=str(p.master),
                rounding=p.stochastic_rounding, case=case, scalars=scalars)


FAST_HARD_CASES = [HARD_CASES[i] for i in pairwise([factors(*c) for c in HARD_CASES], singles=("path",))]


def hard_case(path: str, case: str) -> dict:
    """parity_bits' keyword arguments for one case: its flags, 3 steps, gradients 12 decades
    wider than usual where the dtype has the range."""
    extra = 12.0 if PATHS[path].param_dtype != torch.float16 else 0.0
    return dict(FLAG_SETS[case], steps=3, grad_span_extra=extra)
