"""The numeric contract shared by every backend (docs/numerics.md is its prose form).

Host side: the per-step scalars are computed here, in Python float64, and rounded to
fp32 exactly once. Device side: each backend reads them from one fp32 tensor laid out
as ``SCALAR_SLOTS`` and applies the per-element update in the order that
``reference.py`` writes down.

Stochastic rounding draws its random bits from ``sr_bits(seed, step, param_id, index)``,
a counter-based hash: the bits of an element do not depend on how tensors are grouped
into launches, on block sizes, or on the backend.
"""
from __future__ import annotations

import math
import struct
from typing import NamedTuple

import numpy as np
import torch

# Order of the fp32 scalars in the tensor every kernel reads (slot 8 holds the step's int32 bits).
SCALAR_SLOTS = (
    "step_size",        # lr_t / (1 - beta1^t)
    "bc2_sqrt",         # sqrt(1 - beta2^t)
    "decay",            # d: 1 - (lr_t / lr_peak) / tau_iter, 1 - lr_t * lambda, or 1
    "beta1",
    "one_minus_beta1",
    "beta2",
    "one_minus_beta2",
    "eps",
    "step_bits",        # the step t as int32 bits; seeds stochastic rounding
)
NUM_SCALARS = len(SCALAR_SLOTS)

DECAY_MODES = ("tau", "lambda", "none")


def f32(x: float) -> float:
    """Round a Python float (float64) to the nearest fp32, ties to even."""
    return float(np.float32(x))


_FP32_WORDS, _INT32_WORDS = struct.Struct("<8f"), struct.Struct("<8i")


class StepScalars(NamedTuple):
    """One step's scalars, in slot order: 8 Python floats that hold fp32 values, and the step.

    A tuple, not a dataclass: a step builds one per bucket, and a frozen dataclass cost
    1.0 µs to build against 0.4 µs for this (measured on the 2-core CPU machine).
    """
    step_size: float
    bc2_sqrt: float
    decay: float
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    eps: float
    step: int

    def values(self) -> tuple:
        """The 8 fp32 scalars (Python floats holding fp32 values) and the step, in slot order."""
        return tuple(self)

    def words(self) -> tuple:
        """The 8 fp32 scalars as their bits (signed int32) and the step: how Triton takes them by
        value, since its interpreter types a Python float below 2^-126 as fp64 (docs/numerics.md)."""
        return _INT32_WORDS.unpack(_FP32_WORDS.pack(*self[:8])) + (self.step,)

    def as_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The scalars as a new fp32 tensor that kernels read; copied without a host sync."""
        t = torch.from_numpy(self.write(np.empty(NUM_SCALARS, dtype=np.float32)))
        device = torch.device(device)
        if device.type == "cpu":
            return t
        return t.pin_memory().to(device, non_blocking=True)

    def write(self, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (float32, NUM_SCALARS) in slot order, the step as int32 bits; returns it."""
        out[:-1] = self[:-1]  # fp32 values already: exact
        out[-1:].view(np.int32)[0] = self.step
        return out


def decay_factor(mode: str, lr: float, lr_peak: float, tau_iters: float | None,
                 weight_decay: float | None) -> float:
    """The per-step multiplier d of the parameters, in float64.

    tau:    d = 1 - (lr_t / lr_peak) / tau_iter   (the schedule shapes the decay, the lr's size does not)
    lambda: d = 1 - lr_t * lambda                  (torch.optim.AdamW)
    none:   d = 1
    """
    if mode == "tau":
        if not lr_peak > 0:
            raise ValueError(f"the tau form scales decay by lr_t / lr_peak and needs lr_peak > 0, got {lr_peak!r}: "
                             "set the group's lr_peak (its lr at construction) to the schedule's peak lr")
        d = 1.0 - (lr / lr_peak) / tau_iters
    elif mode == "lambda":
        d = 1.0 - lr * weight_decay
    elif mode == "none":
        return 1.0
    else:
        raise ValueError(f"decay mode must be one of {DECAY_MODES}, got {mode!r}")
    if not (0.0 <= d <= 1.0):
        raise ValueError(
            f"the per-step decay factor is {d!r}, outside [0, 1] (mode {mode!r}, lr {lr!r}): "
            "the learning rate is too large for this tau / weight_decay; lower lr or raise tau")
    return d


def host_scalars(*, lr: float, lr_peak: float, beta1: float, beta2: float, eps: float,
                 step: int, decay_mode: str, tau_iters: float | None = None,
                 weight_decay: float | None = None) -> StepScalars:
    """Every per-step scalar, computed in float64 and rounded once to fp32.

    step is t >= 1, the count after this step. Python's float ``**`` and math.sqrt are used.
    """
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    exact = (lr / bc1, math.sqrt(bc2), decay_factor(decay_mode, lr, lr_peak, tau_iters, weight_decay),
             beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps)
    # one rounding to the nearest fp32 each (ties to even), as f32() does, in one NumPy call
    return StepScalars(*np.array(exact, dtype=np.float32).tolist(), step=int(step))


# --- counter-based random bits for stochastic rounding -------------------------------------
# lowbias32 (C. Wellons' hash-prospector): a bijective 32-bit mixer. All arithmetic is
# modulo 2^32; the same few lines appear in triton_kernels/ and csrc/adamw_math.h.
MIX_MUL1 = 0x7FEB352D
MIX_MUL2 = 0x846CA68B
MASK32 = 0xFFFFFFFF


def mix32(x):
    """lowbias32 on Python ints or int64 tensors that hold uint32 values."""
    x = x ^ (x >> 16)
    x = (x * MIX_MUL1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MIX_MUL2) & MASK32
    return x ^ (x >> 16)


def sr_key(seed: int, step: int, param_id: int) -> int:
    """The per-(seed, step, parameter) key; kernels compute it once per tensor."""
    seed &= 0xFFFFFFFFFFFFFFFF
    k = mix32(param_id & MASK32)
    k = mix32((step & MASK32) ^ k)
    k = mix32(((seed >> 32) & MASK32) ^ k)
    return mix32((seed & MASK32) ^ k)


def sr_bits(key: int, index: torch.Tensor) -> torch.Tensor:
    """32 random bits (as int64 holding uint32) for element indices (int64 tensor)."""
    hi = (index >> 32) & MASK32
    lo = index & MASK32
    return mix32(mix32(hi ^ key) ^ lo)


# --- the same scalars built on the device, from a step count that lives there ---------------
# [note: device-counted steps]
# With a GradScaler the host cannot know whether a step was skipped without waiting for the
# device, and with capturable=True (CUDA graphs) lr and step live on the device. Such buckets
# count steps on the device and build the scalars there, with no host synchronisation and
# the same bits as host_scalars:
#   - 1 - beta1**t and sqrt(1 - beta2**t) come from float64 tables that the host fills with
#     exactly host_scalars' expressions, indexed by the device's t. Past the step where a
#     correction is exactly 1.0 in float64 it stays 1.0, so its table stops there and t is
#     clamped (37k rows for beta 0.999, 700 for 0.95).
#   - lr_t / bc1 and the decay use float64 ops between device tensors (+ - * / are IEEE in
#     float64 on every torch device; a divisor is never a Python number, which CUDA would
#     turn into a multiplication by its reciprocal), then one rounding to fp32.
MAX_TABLE_ROWS = 1 << 22
_TABLES: dict = {}
_MAX_TABLES = 16


def _bias_corrections(beta: float) -> list[float]:
    """1 - beta**t for t = 0, 1, ... up to the first t at which it is exactly 1.0, as host_scalars."""
    out = [0.0]
    while out[-1] != 1.0:
        if len(out) >= MAX_TABLE_ROWS:
            raise ValueError(f"beta {beta} is too close to 1 for device-counted steps: its bias correction would "
                             f"need more than {MAX_TABLE_ROWS} table rows; use a smaller beta, or step without "
                             "capturable=True / a GradScaler / a tensor lr")
        out.append(1.0 - beta ** len(out))
    return out


def bias_table_rows(beta: float) -> int:
    """Rows of a bias-correction table: 1 + the first t at which 1 - beta**t is exactly 1.0."""
    return len(_bias_corrections(beta))


def bias_table(beta: float, sqrt: bool, device: torch.device) -> torch.Tensor:
    """float64 [T] on ``device``: entry t = 1 - beta**t (math.sqrt of it with sqrt=True), as host_scalars."""
    key = (float(beta), sqrt, torch.device(device))
    table = _TABLES.pop(key, None)
    if table is None:
        host = _bias_corrections(beta)
        if sqrt:
            host = [math.sqrt(x) for x in host]
        table = torch.tensor(host, dtype=torch.float64).to(device)
    _TABLES[key] = table  # most recently used last; a cycled beta1 (OneCycleLR) must not pile up tables
    while len(_TABLES) > _MAX_TABLES:
        _TABLES.pop(next(iter(_TABLES)))
    return table


class DeviceScalarBuilder:
    """Builds the 9-slot scalar tensor on the device from a device step count (and lr).

    Built once per bucket and hyper-parameter set: the constants go to the device here,
    so building the scalars each step copies nothing from the host and can be captured.
    """

    def __init__(self, *, lr_peak: float, beta1: float, beta2: float, eps: float, decay_mode: str,
                 tau_iters: float | None, weight_decay: float | None, device: torch.device):
        if decay_mode not in DECAY_MODES:
            raise ValueError(f"decay mode must be one of {DECAY_MODES}, got {decay_mode!r}")
        if decay_mode == "tau" and not lr_peak > 0:
            decay_factor("tau", 0.0, lr_peak, tau_iters, None)  # raises, saying why
        self.decay_mode = decay_mode
        self.bc1 = bias_table(beta1, False, device)
        self.bc2_sqrt = bias_table(beta2, True, device)
        self.consts = torch.tensor([lr_peak, tau_iters or 1.0, weight_decay or 0.0],
                                   dtype=torch.float64).to(device)
        fixed = [f32(beta1), f32(1.0 - beta1), f32(beta2), f32(1.0 - beta2), f32(eps)]
        self.fixed = torch.tensor(fixed, dtype=torch.float32).to(device)

    def __call__(self, lr: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """lr: float64 [1] on the device (lr_t); step: float32 [1], t (the count after this step)."""
        t = step.to(torch.int64)
        bc1 = self.bc1.index_select(0, t.clamp(max=self.bc1.shape[0] - 1))
        bc2_sqrt = self.bc2_sqrt.index_select(0, t.clamp(max=self.bc2_sqrt.shape[0] - 1))
        step_size = lr / bc1
        if self.decay_mode == "tau":
            decay = 1.0 - (lr / self.consts[0:1]) / self.consts[1:2]
        elif self.decay_mode == "lambda":
            decay = 1.0 - lr * self.consts[2:3]
        else:
            decay = torch.ones_like(lr)
        head = torch.cat([step_size, bc2_sqrt, decay]).to(torch.float32)
        return torch.cat([head, self.fixed, step.to(torch.int32).view(torch.float32)])
