"""A bucket's scalars for one step (contract.SCALAR_SLOTS): on the host, or on its device.

Host-counted buckets get ``contract.host_scalars``, computed in float64 and rounded once;
kernels launched from tables take them by value, the list-form op as a device tensor.
Device-counted buckets (capturable, GradScaler, a tensor lr, torch.compile) build them on
the device from the step count there (``contract.DeviceScalarBuilder``), so no step reads
the device.
"""
from __future__ import annotations

import torch

from ..core.contract import DeviceScalarBuilder, StepScalars, decay_factor, host_scalars
from .buckets import Bucket


def bucket_scalars(b: Bucket, group: dict, by_value: bool) -> StepScalars | torch.Tensor:
    """This step's scalars for bucket ``b`` of ``group``; ``by_value``: a kernel launched from
    tables takes host scalars as arguments, not as a tensor."""
    if b.on_device:
        return device_scalars(b, group)
    scalars = host_scalars(
        lr=group["lr"], lr_peak=group["lr_peak"], beta1=group["betas"][0], beta2=group["betas"][1],
        eps=group["eps"], step=b.done + 1, decay_mode=group["decay"], tau_iters=group["tau_iters"],
        weight_decay=group["weight_decay"])
    return scalars if by_value else scalars.as_tensor(b.device)


def device_scalars(b: Bucket, group: dict) -> torch.Tensor:
    """The bucket's scalars built on its device from its step count there."""
    key = (group["lr_peak"], *group["betas"], group["eps"], group["decay"], group["tau_iters"],
           group["weight_decay"])
    if b.builder is None or b.builder[0] != key:
        b.builder = (key, DeviceScalarBuilder(
            lr_peak=group["lr_peak"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
            decay_mode=group["decay"], tau_iters=group["tau_iters"], weight_decay=group["weight_decay"],
            device=b.device))
    lr = group["lr"]
    if isinstance(lr, torch.Tensor):
        lr64 = lr.to(device=b.device, dtype=torch.float64, non_blocking=True).reshape(1)
    else:
        # a Python lr: its decay factor is range-checked here, on the host
        decay_factor(group["decay"], lr, group["lr_peak"], group["tau_iters"], group["weight_decay"])
        lr64 = torch.full((1,), lr, dtype=torch.float64, device=b.device)  # a fill, no host copy
    return b.builder[1](lr64, b.steps[:1] + 1)
