"""8-bit blockwise states: exp_avg, exp_avg_sq and max_exp_avg_sq as one uint8 code per element
and one fp32 scale per block of 256 elements (docs/numerics.md, "8-bit states").

What the format owns, per state tensor ``x`` of a parameter with n elements:
- codes: uint8, the parameter's shape (key ``<x>_q8``: ``exp_avg_q8``, ...; ``codes_key``);
- scales: fp32 ``[ceil(n / 256)]`` (key ``<x>_scale``): the absmax of each block of 256
  consecutive elements of the flattened (local) tensor; the last block may be partial, and
  nothing pads it.

The rules, the same on every backend:
- scale = max |x| over the block's new fp32 values. A NaN in the block makes the scale NaN,
  and the whole block then decodes to NaN (map * NaN); a ±inf makes it inf, and the block
  decodes to non-finite values. Either way the update that produced them was already
  non-finite: the format keeps that visible rather than hiding it behind a finite scale.
- x̂ = x / scale, one correctly rounded fp32 division (x̂ = x when the scale is 0: an
  all-zero block takes the zero code).
- code = #{k : x̂ > T[k]}, with T the fp32 threshold table below (255 entries, ascending).
  T[k] is the exact midpoint of map[k] and map[k+1] rounded toward −inf to fp32, so the
  code is the map value nearest to x̂, and an x̂ exactly at a midpoint (only possible when
  the midpoint is an fp32 value) takes the LOWER code (the smaller map value): "ties go
  down". A NaN x̂ is greater than nothing: code 0.
- zero rules, so that a later zero gradient never divides a non-zero m by eps alone:
  - exp_avg (signed map) takes the zero code (127) only when it is ±0 (T[126] = −2^-149,
    T[127] = +0.0), so a tiny value keeps its sign;
  - exp_avg_sq and max_exp_avg_sq (unsigned map) decode to 0 only when exactly 0: T[0] =
    +0.0, and a positive value takes at least the block's lowest positive code
    ``lowest_positive_code(scale)``, the first code whose map value times the scale is not 0
    (1 at a normal scale; more at a subnormal one; 0 at an inf or NaN scale, where nothing
    decodes to 0). So a value whose quotient x / scale underflows to 0, beside a large one,
    still decodes above 0;
  - exp_avg takes the zero code wherever the second moment the next step divides by
    (exp_avg_sq, or max_exp_avg_sq with amsgrad) takes code 0 (``zero_rule``): where v
    decodes to 0, m decodes to 0 too. v is then exactly 0 (or the block non-finite), as
    when (1 − β2)·g² underflows in fp32 beside a non-zero (1 − β1)·g.
- decode: map[code] * scale, one correctly rounded fp32 multiply.

The maps are bitsandbytes' ``functional.create_dynamic_map`` (signed: 127 negatives, 0, 128
positives ending at +1.0, no −1.0; unsigned: 0, 254 positives, 1.0), which torchao's
``quant_utils`` copies: bit-identical, so their checkpoints' codes mean the same here. They
are written as fp32 words (formats/q8_tables.py) and never computed at run time (tests/formats checks them
against both libraries where installed, and against the definition always). The same
words are in csrc/q8_blockwise.h, for the C++ and CUDA kernels.

Everything here is the reference's style: each fp32 op done in float64 on fp32 inputs and
rounded to fp32 after it (core/reference.py's note), and comparisons.
"""
from __future__ import annotations

import functools

import torch

from .q8_tables import SIGNED_MAP_BITS, SIGNED_THRESHOLD_BITS, UNSIGNED_MAP_BITS, UNSIGNED_THRESHOLD_BITS

BLOCK = 256             # elements per scale
BITS = 8                # bits a code
MIN_NUMEL = 4096        # a tensor with fewer elements keeps fp32 states (norms, biases), as bitsandbytes
FORMAT_VERSION = 2      # the native state dict's version of this format (1: codes under the moment's own key)
READ_VERSIONS = (1, 2)  # versions a state dict is read in
STATE_DTYPE = "8bit"    # the group option that selects it
SCALE_SUFFIX = "_scale"
CODES_SUFFIX = "_q8"    # codes live under "exp_avg_q8", never "exp_avg": torch.optim.AdamW reads that key
ZERO_CODE = {True: 127, False: 0}  # signed map, unsigned map
ZERO_BY_DECODE = False  # the zero rule reads v's code (0), not its decoded value

_F64 = torch.float64


def signed_for(key: str) -> bool:
    """Which map a state uses: the signed one for exp_avg, the unsigned for the squares."""
    if key == "exp_avg":
        return True
    if key in ("exp_avg_sq", "max_exp_avg_sq"):
        return False
    raise KeyError(f"the 8-bit format keeps exp_avg, exp_avg_sq and max_exp_avg_sq, not {key!r}")


def codes_key(key: str) -> str:
    """Where a moment's 8-bit codes are kept, in ``opt.state`` and state dicts: not under the
    moment's own key, which torch.optim.AdamW would read as fp32 values (0..255) after
    casting, so that loading them there fails (KeyError 'exp_avg' at its first step, a missing
    key through DCP) instead of running on garbage."""
    return key + CODES_SUFFIX


def moment_key(key: str, dtype: torch.dtype) -> str:
    """Where a moment stored as ``dtype`` is kept: ``codes_key`` for uint8 codes, else its own key."""
    return codes_key(key) if dtype == torch.uint8 else key


def n_blocks(numel: int) -> int:
    return (numel + BLOCK - 1) // BLOCK


def _words(bits) -> torch.Tensor:
    w = torch.tensor(bits, dtype=torch.int64)
    return torch.where(w >= 2 ** 31, w - 2 ** 32, w).to(torch.int32).view(torch.float32)


@functools.cache
def _table(name: str, device: torch.device) -> torch.Tensor:
    return _words(_TABLES[name]).to(device)


def qmap(signed: bool, device="cpu") -> torch.Tensor:
    """The 256 map values (fp32, ascending) on ``device``; do not write to it."""
    return _table("signed_map" if signed else "unsigned_map", torch.device(device))


def thresholds(signed: bool, device="cpu") -> torch.Tensor:
    """The 255 thresholds (fp32, ascending) on ``device``; do not write to it."""
    return _table("signed_thresholds" if signed else "unsigned_thresholds", torch.device(device))


def block_absmax(x: torch.Tensor) -> torch.Tensor:
    """fp32 ``[n_blocks]``: max |x| over each block of the flattened ``x``; NaN if the block holds one."""
    flat = x.detach().reshape(-1).to(torch.float32)
    pad = n_blocks(flat.numel()) * BLOCK - flat.numel()
    blocks = torch.nn.functional.pad(flat.abs(), (0, pad)).view(-1, BLOCK)
    return torch.where(blocks.isnan().any(dim=1), float("nan"), blocks.amax(dim=1))


def _per_element(scales: torch.Tensor, numel: int) -> torch.Tensor:
    return scales.repeat_interleave(BLOCK)[:numel]


def encode_with(x: torch.Tensor, scales: torch.Tensor, signed: bool) -> torch.Tensor:
    """uint8 codes of fp32 ``x`` (any shape) against given per-block ``scales``."""
    flat = x.reshape(-1).to(_F64)
    s = _per_element(scales.to(_F64), flat.numel())
    xhat = (flat / torch.where(s == 0, 1.0, s)).to(torch.float32)  # one fp32 division
    thr = thresholds(signed, x.device).to(_F64)
    code = torch.bucketize(xhat.to(_F64), thr, right=False)  # #{k : T[k] < x̂}
    code = torch.where(xhat.isnan(), 0, code)
    if not signed:  # a positive value never decodes to 0: at least the block's lowest positive code
        lowest = _per_element(lowest_positive_code(scales), flat.numel())
        code = torch.where(flat > 0, torch.maximum(code, lowest), code)
    return code.to(torch.uint8).reshape(x.shape)


def lowest_positive_code(scales: torch.Tensor) -> torch.Tensor:
    """int64 per scale: #{k < 255 : map[k] * scale == 0} over the unsigned map (one fp32 multiply
    each), the first code that does not decode to 0 at that scale: 1 at a normal scale, more
    at a subnormal one, 0 at an inf or NaN scale (map * scale is never 0 there), 255 at 0."""
    values = qmap(False, scales.device)[:255].to(_F64)
    products = (values.reshape(1, -1) * scales.to(_F64).reshape(-1, 1)).to(torch.float32)
    return (products == 0).sum(dim=1)


def zero_rule(m_codes: torch.Tensor, v_codes: torch.Tensor, v_scales=None, numel=None) -> torch.Tensor:
    """exp_avg's codes with the zero code wherever the second moment's (``v_codes``: exp_avg_sq's,
    or max_exp_avg_sq's with amsgrad; same shape) is 0: where v decodes to 0, m decodes to 0.
    (``v_scales`` and ``numel``: the codec interface's, which this rule does not need.)"""
    return torch.where(v_codes == 0, ZERO_CODE[True], m_codes).to(torch.uint8)


def encode(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales) of fp32 ``x``: codes uint8 of x's shape (codes_shape), scales fp32 [n_blocks]."""
    scales = block_absmax(x)
    return encode_with(x, scales, signed), scales


def decode(codes: torch.Tensor, scales: torch.Tensor, signed: bool, shape=None) -> torch.Tensor:
    """fp32 values of ``codes`` (uint8, any shape; the result in ``shape`` if given, else the
    codes'): map[code] * scale, one fp32 multiply."""
    values = qmap(signed, codes.device).to(_F64)[codes.reshape(-1).to(torch.int64)]
    s = _per_element(scales.to(_F64), codes.numel())
    return (values * s).to(torch.float32).reshape(codes.shape if shape is None else shape)


def codes_shape(p: torch.Tensor, local: torch.Tensor) -> tuple:
    """The codes' shape for parameter ``p``: its own (a code a byte; a DTensor's codes are one too)."""
    return tuple(p.shape)


def new_state(key: str, p: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh 8-bit ``key`` state of parameter ``p`` (``local``: the shard a kernel steps, or p):
    the zero code in p's shape, row-major, and zero scales over the local blocks (decoding to +0.0)."""
    codes = torch.full_like(p, ZERO_CODE[signed_for(key)], dtype=torch.uint8, memory_format=torch.contiguous_format)
    return codes, torch.zeros(n_blocks(local.numel()), dtype=torch.float32, device=local.device)


def scale_problem(state: dict, key: str, local: torch.Tensor) -> str | None:
    """What is wrong with the scales beside moment ``key``'s 8-bit codes for a shard like ``local``, or None."""
    scale = state.get(key + SCALE_SUFFIX)
    scale = scale.to_local() if hasattr(scale, "to_local") else scale  # a DTensor's: this rank's blocks
    blocks = n_blocks(local.numel())
    if (isinstance(scale, torch.Tensor) and scale.dtype == torch.float32 and scale.shape == (blocks,)
            and scale.device == local.device):
        return None
    got = f"{scale.dtype} of shape {tuple(scale.shape)} on {scale.device}" if isinstance(scale, torch.Tensor) else \
        repr(scale)
    return (f"its 8-bit state {key!r} needs {key + SCALE_SUFFIX!r}, float32 of shape ({blocks},) on {local.device} "
            f"(one scale per {BLOCK} elements), got {got}")


_TABLES = {"signed_map": SIGNED_MAP_BITS, "unsigned_map": UNSIGNED_MAP_BITS,
           "signed_thresholds": SIGNED_THRESHOLD_BITS, "unsigned_thresholds": UNSIGNED_THRESHOLD_BITS}
