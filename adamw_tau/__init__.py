"""adamw_tau: a fused, bitwise-reproducible AdamW whose weight decay is set by its EMA timescale."""
import os as _os

# From a plain checkout on PYTHONPATH, the folders that setuptools maps into the package
# (triton_kernels/ -> adamw_tau.triton_kernels, csrc/ -> adamw_tau.csrc) sit beside it.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "triton_kernels", "adamw_fused.py")):
    __path__.append(_root)  # noqa: F821
from .core.contract import StepScalars, host_scalars
from .core.timescale import (
    iters_per_epoch,
    lambda_from_tau_epoch,
    lambda_from_tau_iter,
    tau_epoch_from_lambda,
    tau_epoch_from_tau_iter,
    tau_iter_from_lambda,
    tau_iter_from_tau_epoch,
)
from .optim.optimizer import AdamWTau
from .scaling.mup import mup_param_groups

__all__ = ["AdamWTau", "mup_param_groups", "StepScalars", "host_scalars", "iters_per_epoch", "lambda_from_tau_epoch",
           "lambda_from_tau_iter", "tau_epoch_from_lambda", "tau_epoch_from_tau_iter", "tau_iter_from_lambda",
           "tau_iter_from_tau_epoch"]
__version__ = "0.1.0"
