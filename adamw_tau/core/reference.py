"""The numeric contract in pure PyTorch: the oracle for every backend and the fallback backend.

[note: why float64 with a rounding after every op]
Every fp32 op of the contract must be correctly rounded. Torch's own fp32 kernels are not
always: on CPU, fp32 ``sqrt`` differed from the correctly rounded result in 27k of 4M
words; on CUDA, ``t / scalar`` multiplies by the reciprocal and ``addcmul`` fuses. An op
done in float64 on fp32 inputs and rounded to fp32 equals the correctly rounded fp32 op
for + - * / and sqrt (53 >= 2*24 + 2), and float64 + - * / sqrt are IEEE on every torch
device. So each line below is one fp32 op: ``_r(float64 op)``. Scalars are divided as
expanded tensors, never as Python numbers, to stay off the reciprocal path.

No host synchronisation: the scalars, the grad scale and found_inf stay on the device;
a step with found_inf != 0 writes back the old values bit for bit.
"""
from __future__ import annotations

import torch

from ..formats import bf16_remainder, registry
from .contract import MASK32, mix32, sr_bits

_F64 = torch.float64


def _r(x: torch.Tensor) -> torch.Tensor:
    """Round float64 values to fp32 (ties to even) and hold them in float64 again."""
    return x.to(torch.float32).to(_F64)


def _key_tensor(seed: int, step_bits: torch.Tensor, param_id: int) -> torch.Tensor:
    """contract.sr_key with the step read from the scalars tensor (no host sync)."""
    seed &= 0xFFFFFFFFFFFFFFFF
    step = step_bits.to(torch.int64) & MASK32
    k = mix32(param_id & MASK32)
    k = mix32(step ^ k)
    k = mix32(((seed >> 32) & MASK32) ^ k)
    return mix32((seed & MASK32) ^ k)


def stochastic_round(x: torch.Tensor, bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round fp32 ``x`` to bf16/fp16 up or down with probability given by its distance.

    bf16: add the low 16 random bits to the fp32 word and truncate the low 16 bits.
    fp16, |x| >= 2^-24: the same with the 13 (more below 2^-14) bits fp16 lacks at x's exponent.
    fp16, |x| <  2^-24: 2^-24 if (bits & 0xFFFFFF) * 2^-24 < |x| * 2^24, else 0, with x's sign.
    Inf and NaN round to nearest.
    """
    u = x.view(torch.int32).to(torch.int64) & MASK32
    if dtype == torch.bfloat16:
        mask = torch.full_like(u, 0xFFFF)
    elif dtype == torch.float16:
        biased_exp = (u >> 23) & 0xFF
        shift = 13 + torch.clamp(113 - biased_exp, min=0, max=10)
        mask = (torch.ones_like(u) << shift) - 1
    else:
        raise TypeError(f"stochastic rounding targets bfloat16 or float16, not {dtype}")
    v = ((u + (bits & mask)) & (MASK32 ^ mask))
    v = torch.where(v >= 2**31, v - 2**32, v).to(torch.int32)
    y = v.view(torch.float32).to(dtype)
    if dtype == torch.float16:
        ax = x.abs()
        tiny = ax < 2.0 ** -24
        q = ax * 2.0 ** 24
        r24 = (bits & 0xFFFFFF).to(torch.float32) * 2.0 ** -24
        up = torch.where(r24 < q, torch.full_like(x, 2.0 ** -24), torch.zeros_like(x))
        y = torch.where(tiny, torch.copysign(up, x).to(dtype), y)
    return torch.where(torch.isfinite(x), y, x.to(dtype))


def _widened(fmt, state: torch.Tensor, scales, i: int, moment: str, shape) -> torch.Tensor:
    """A state's fp32 values in float64: widened, or decoded from codes and their scales."""
    return fmt.decode(state, scales[i] if fmt.quantized else None, moment, shape).to(_F64)


def _narrowed(fmt, new: dict, state: torch.Tensor, scales, i: int, value: torch.Tensor, moment: str) -> None:
    """``new[state]`` (and its scales') for fp32 ``value``: rounded to the state's dtype, or
    encoded as codes with new scales (the block max of the new values)."""
    main, scale = fmt.encode(value.to(torch.float32), moment)
    new[state] = main
    if scale is not None:
        new[scales[i]] = scale


def adamw_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters,
                scalars: torch.Tensor, param_ids, seed: int, amsgrad: bool, maximize: bool,
                stochastic_rounding: bool, grad_scale: torch.Tensor | None = None,
                found_inf: torch.Tensor | None = None, exp_avg_scales=(), exp_avg_sq_scales=(),
                max_exp_avg_sq_scales=(), state_format=None, grad_coef: torch.Tensor | None = None) -> None:
    """One AdamW step for tensors that share a dtype path; updates in place.

    ``scalars`` is contract.StepScalars.as_tensor(): fp32, on the parameters' device.
    ``masters`` is empty, or one master per param: an fp32 master, or the int16 remainder of
    a bf16 param (``formats.bf16_remainder``: the master is the param and remainder merged,
    and split again after the step). ``max_exp_avg_sqs`` is empty unless amsgrad.
    ``state_format``: the moments' format (formats.registry: an id, a name, or None for the
    one the states' dtype implies). Quantized formats (registry.QUANTIZED): the state lists hold
    uint8 codes and the ``*_scales`` lists one fp32 scale tensor per param (empty otherwise);
    the step decodes them, updates in the contract's order, and encodes the new fp32 values.
    ``grad_coef``: the clipping coefficient (core.grad_norm.clip_coef), fp32 on the device; each
    gradient is multiplied by it after unscaling, as ``scaler.unscale_`` then ``clip_grad_norm_``.
    """
    fmt = registry.resolve(state_format, exp_avgs[0].dtype) if exp_avgs else registry.FP32
    s = scalars.to(_F64)
    step_size, bc2_sqrt, decay, beta1, omb1, beta2, omb2, eps = (s[i] for i in range(8))
    step_bits = scalars.view(torch.int32)[8]
    skip = None if found_inf is None else (found_inf.reshape(()) != 0)
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.numel() == 0:
            continue
        m_t, v_t = exp_avgs[i], exp_avg_sqs[i]
        master = masters[i] if masters else None
        vmax_t = max_exp_avg_sqs[i] if amsgrad else None

        g = g.to(_F64)
        if grad_scale is not None:
            g = _r(g / grad_scale.to(_F64).expand_as(g))
        if grad_coef is not None:
            g = _r(g * grad_coef.to(_F64))
        if maximize:
            g = -g
        remainder = master is not None and registry.master_of([master]) == registry.REMAINDER_MASTER.id
        if remainder:
            w = bf16_remainder.merge(p, master).to(_F64)
        else:
            w = (master if master is not None else p).to(_F64)
        w = _r(w * decay)
        m = _r(_r(beta1 * _widened(fmt, m_t, exp_avg_scales, i, "exp_avg", p.shape)) + _r(omb1 * g))
        v = _r(_r(beta2 * _widened(fmt, v_t, exp_avg_sq_scales, i, "exp_avg_sq", p.shape)) + _r(omb2 * _r(g * g)))
        if amsgrad:
            vmax = torch.maximum(_widened(fmt, vmax_t, max_exp_avg_sq_scales, i, "max_exp_avg_sq", p.shape), v)
            v_use = vmax
        else:
            v_use = v
        denom = _r(_r(_r(torch.sqrt(v_use)) / bc2_sqrt.expand_as(v_use)) + eps)
        w = _r(w - _r(step_size * _r(m / denom)))

        w32 = w.to(torch.float32)
        new = {}
        _narrowed(fmt, new, m_t, exp_avg_scales, i, m, "exp_avg")
        _narrowed(fmt, new, v_t, exp_avg_sq_scales, i, v, "exp_avg_sq")
        if amsgrad:
            _narrowed(fmt, new, vmax_t, max_exp_avg_sq_scales, i, vmax, "max_exp_avg_sq")
        if fmt.quantized:  # where the v the next step divides by decodes to 0, m does too
            d_t, d_s = (vmax_t, max_exp_avg_sq_scales[i]) if amsgrad else (v_t, exp_avg_sq_scales[i])
            new[m_t] = fmt.zero_rule(new[m_t], new[d_t], new[d_s], p.numel())
        if remainder:
            new[p], new[master] = bf16_remainder.split(w32)
        elif master is not None:
            new[master] = w32
            new[p] = w32.to(p.dtype)
        elif p.dtype == torch.float32:
            new[p] = w32
        elif stochastic_rounding:
            idx = torch.arange(p.numel(), device=p.device, dtype=torch.int64)
            bits = sr_bits(_key_tensor(seed, step_bits, int(param_ids[i])), idx)
            new[p] = stochastic_round(w32.reshape(-1), bits, p.dtype).reshape(p.shape)
        else:
            new[p] = w32.to(p.dtype)
        for dst, val in new.items():
            if skip is not None:
                val = torch.where(skip, dst, val)
            dst.copy_(val)
