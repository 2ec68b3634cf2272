"""An exact fp32 master in 2 extra bytes: the bf16 param plus an int16 remainder.

State: ``master_remainder``, int16, the param's shape, beside a bfloat16 param. The pair
holds the fp32 master ``u`` (its 32 bits) exactly; nothing else is kept.

[note: the split] Transformer Engine's ``store_param_remainders`` format
(``multi_tensor/adam.cu``, ``AdamFunctorMasterParamRemainder``), with a NaN rule added:

    u    = 0x7FC00000 if u is a NaN else u          (canonical NaN, below)
    rem  = int16(u & 0xFFFF)                          the low half, as a signed 16-bit word
    bf16 = (u + 0x8000) >> 16                         == (u >> 16) + (rem < 0)

and back, before the next step:

    hi   = (bf16 - (rem < 0)) & 0xFFFF
    u    = (hi << 16) | uint16(rem)

All of it is integer arithmetic modulo 2^32 (2^16 for ``hi``). The param is therefore ``u``
rounded to nearest bf16 with **ties away from zero**, on the bit pattern: adding 0x8000 carries
into the high half exactly when the low half is 0x8000 or more, whatever the sign. This is
not torch's ``.to(torch.bfloat16)`` (ties to even): the two differ only when the low half is
exactly 0x8000 and the high half is even, about 2^-17 of random words. A 16-bit remainder
cannot carry ties-to-even: an even bf16 value would then come from 2^16 + 1 fp32 words.
Past the largest bf16 the rounding goes to inf, as ties-to-even does (the master stays finite
and exact).

[note: NaN] Without a rule, TE's split hides NaNs: CUDA's canonical NaN ``0x7FFFFFFF``
becomes bf16 ``0x8000`` (-0.0), and ``0x7F800001`` becomes ``0x7F80`` (+inf). Every NaN
master is therefore replaced by ``0x7FC00000`` before the split: the param is the bf16 NaN
``0x7FC0`` and the remainder 0, so a NaN master is always a NaN param. Its payload and sign
are not kept (they are not part of the contract: two NaNs count as equal).
"""
from __future__ import annotations

import torch

STATE_KEY = "master_remainder"
CANONICAL_NAN = 0x7FC00000
_MASK32 = 0xFFFFFFFF


def _bits(x: torch.Tensor) -> torch.Tensor:
    """fp32 words as int64 holding uint32."""
    return x.contiguous().view(torch.int32).to(torch.int64) & _MASK32


def _as_int(u: torch.Tensor, dtype: torch.dtype, bits: int) -> torch.Tensor:
    """Unsigned words of ``bits`` bits (int64) as the signed ``dtype`` of that width."""
    return torch.where(u >= 2 ** (bits - 1), u - 2 ** bits, u).to(dtype)


def split(master: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 master -> (bf16 param, int16 remainder), by the module's rules."""
    if master.dtype != torch.float32:
        raise TypeError(f"split takes an fp32 master, got {master.dtype}")
    u = _bits(master)
    u = torch.where((u & 0x7FFFFFFF) > 0x7F800000, torch.full_like(u, CANONICAL_NAN), u)
    hi = ((u + 0x8000) >> 16) & 0xFFFF
    param = _as_int(hi, torch.int16, 16).view(torch.bfloat16).reshape(master.shape)
    remainder = _as_int(u & 0xFFFF, torch.int16, 16).reshape(master.shape)
    return param, remainder


def merge(param: torch.Tensor, remainder: torch.Tensor) -> torch.Tensor:
    """(bf16 param, int16 remainder) -> the fp32 master they hold, exactly."""
    if param.dtype != torch.bfloat16 or remainder.dtype != torch.int16:
        raise TypeError(f"merge takes a bfloat16 param and an int16 remainder, got {param.dtype} and "
                        f"{remainder.dtype}")
    if param.shape != remainder.shape:
        raise ValueError(f"param shape {tuple(param.shape)} and remainder shape {tuple(remainder.shape)} differ")
    p = param.contiguous().view(torch.int16).to(torch.int64) & 0xFFFF
    r = remainder.contiguous().to(torch.int64)
    hi = (p - (r < 0).to(torch.int64)) & 0xFFFF
    u = (hi << 16) | (r & 0xFFFF)
    return _as_int(u, torch.int32, 32).view(torch.float32).reshape(param.shape)


def round_param(master: torch.Tensor) -> torch.Tensor:
    """The bf16 param the format keeps for ``master`` (ties away from zero, NaN -> 0x7FC0)."""
    return split(master)[0]


def from_param(param: torch.Tensor) -> torch.Tensor:
    """The remainder of a run that starts from a bf16 param with no master (torch AdamW's
    state, a fresh state): the master is the param widened, whose low half is 0, so the
    remainder is 0 (a NaN param splits to the canonical NaN, whose low half is 0 too). Built
    with ``zeros_like``, so a DTensor param gets a DTensor remainder of its placement."""
    return torch.zeros_like(param, dtype=torch.int16, memory_format=torch.preserve_format)
