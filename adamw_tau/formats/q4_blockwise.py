"""4-bit blockwise states: exp_avg, exp_avg_sq and max_exp_avg_sq as one 4-bit code per element,
two codes a byte, and one fp32 scale per block of 128 elements (docs/numerics.md, "4-bit states").
torchao's ``AdamW4bit`` (``subclass_4bit.py``, after lpmm's default config), rank-1
normalisation left out.

What the format owns, per state tensor ``x`` of a parameter with n (local) elements:
- codes: uint8 ``[ceil(n / 2)]`` (key ``<x>_q4``): element i's code is the low nibble of byte
  i // 2 when i is even, the high nibble when odd; an odd n leaves the last byte's high
  nibble 0;
- scales: fp32 ``[ceil(n / 128)]`` (key ``<x>_scale``): the absmax of each block of 128
  consecutive elements; the last block may be partial.

The rules, the same on every backend (those of formats/q8_blockwise.py with 16-entry tables):
- scale = max |x| over the block (NaN if the block holds one, inf if it holds an inf);
- x̂ = x / scale (x when the scale is 0), one correctly rounded fp32 division;
- code = #{k : x̂ > T[k]} against the 15 fp32 thresholds below: the nearest map value, and
  at an exact midpoint the lower one ("ties go down"); a NaN x̂ takes code 0;
- exp_avg uses the signed dynamic map (``create_dynamic_map(True, 3, 4)``: 7 negatives, 0,
  7 positives, 1.0); zero code 7, taken by nearest rounding (a tiny value is not kept off 0:
  the map's smallest magnitude is 0.0055, so a sign rule would move small values 0.0055
  scale away);
- exp_avg_sq and max_exp_avg_sq use the zero-free unsigned map (k / 16, k = 1..16): every
  code decodes above 0 at a normal scale, so a second moment of a block with any non-zero
  value never decodes to 0 and the divide-by-eps failure cannot happen there. A positive
  value takes at least the block's lowest positive code (``lowest_positive_code``: the
  first code whose map value times the scale is not 0; 0 at any scale above 2^-146);
- exp_avg takes the zero code wherever the second moment the next step divides by decodes
  to 0 (``zero_rule``: map[code] * scale == 0, an all-zero block or an underflowing one);
- decode: map[code] * scale, one correctly rounded fp32 multiply.
"""
from __future__ import annotations

import functools

import torch

BLOCK = 128
MIN_NUMEL = 4096
CODES_SUFFIX = "_q4"
SCALE_SUFFIX = "_scale"
BITS = 4
ZERO_CODE = {True: 7, False: 0}
ZERO_BY_DECODE = True  # the zero rule reads v's decoded value: the unsigned map has no zero code

SIGNED_MAP_BITS = (
    0xBF633333, 0xBF29999A, 0xBEE00000, 0xBE599999, 0xBD9EB852, 0xBD051EB9, 0xBBB43958, 0x00000000,
    0x3BB43958, 0x3D051EB9, 0x3D9EB852, 0x3E599999, 0x3EE00000, 0x3F29999A, 0x3F633333, 0x3F800000,
)
UNSIGNED_MAP_BITS = (
    0x3D800000, 0x3E000000, 0x3E400000, 0x3E800000, 0x3EA00000, 0x3EC00000, 0x3EE00000, 0x3F000000,
    0x3F100000, 0x3F200000, 0x3F300000, 0x3F400000, 0x3F500000, 0x3F600000, 0x3F700000, 0x3F800000,
)
SIGNED_THRESHOLD_BITS = (
    0xBF466667, 0xBF0CCCCD, 0xBEA66667, 0xBE147AE1, 0xBD6147AF, 0xBC9BA5E4, 0xBB343958, 0x3B343958,
    0x3C9BA5E4, 0x3D6147AE, 0x3E147AE1, 0x3EA66666, 0x3F0CCCCD, 0x3F466666, 0x3F719999,
)
UNSIGNED_THRESHOLD_BITS = (
    0x3DC00000, 0x3E200000, 0x3E600000, 0x3E900000, 0x3EB00000, 0x3ED00000, 0x3EF00000, 0x3F080000,
    0x3F180000, 0x3F280000, 0x3F380000, 0x3F480000, 0x3F580000, 0x3F680000, 0x3F780000,
)

_F64 = torch.float64


def n_blocks(numel: int) -> int:
    return (numel + BLOCK - 1) // BLOCK


def n_bytes(numel: int) -> int:
    return (numel + 1) // 2


def codes_shape(p: torch.Tensor, local: torch.Tensor) -> tuple:
    """The codes' shape for parameter ``p``: flat bytes of its whole numel (a DTensor's codes are
    a Shard(0) DTensor of that global shape, each rank's local bytes its shard's:
    launch/sharded_scales.py; ``local`` is unused, the codec interface's)."""
    return (n_bytes(p.numel()),)


def _words(bits) -> torch.Tensor:
    w = torch.tensor(bits, dtype=torch.int64)
    return torch.where(w >= 2 ** 31, w - 2 ** 32, w).to(torch.int32).view(torch.float32)


@functools.cache
def _table(name: str, device: torch.device) -> torch.Tensor:
    return _words(_TABLES[name]).to(device)


def qmap(signed: bool, device="cpu") -> torch.Tensor:
    """The 16 map values (fp32, ascending) on ``device``; do not write to it."""
    return _table("signed_map" if signed else "unsigned_map", torch.device(device))


def thresholds(signed: bool, device="cpu") -> torch.Tensor:
    """The 15 thresholds (fp32, ascending) on ``device``; do not write to it."""
    return _table("signed_thresholds" if signed else "unsigned_thresholds", torch.device(device))


def block_absmax(x: torch.Tensor) -> torch.Tensor:
    """fp32 ``[n_blocks]``: max |x| over each block of the flattened ``x``; NaN if the block holds one."""
    flat = x.detach().reshape(-1).to(torch.float32)
    pad = n_blocks(flat.numel()) * BLOCK - flat.numel()
    blocks = torch.nn.functional.pad(flat.abs(), (0, pad)).view(-1, BLOCK)
    return torch.where(blocks.isnan().any(dim=1), float("nan"), blocks.amax(dim=1))


def _per_element(scales: torch.Tensor, numel: int) -> torch.Tensor:
    return scales.repeat_interleave(BLOCK)[:numel]


def lowest_positive_code(scales: torch.Tensor) -> torch.Tensor:
    """int64 per scale: #{k < 15 : map[k] * scale == 0} over the unsigned map (one fp32 multiply
    each): 0 at any normal scale, more at a tiny subnormal one, 15 at 0."""
    values = qmap(False, scales.device)[:15].to(_F64)
    products = (values.reshape(1, -1) * scales.to(_F64).reshape(-1, 1)).to(torch.float32)
    return (products == 0).sum(dim=1)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """int codes (flat, 0..15) -> uint8 bytes, low nibble first; an odd count's last high nibble is 0."""
    flat = codes.reshape(-1).to(torch.int64)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.view(-1, 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8)


def unpack(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """uint8 bytes -> int64 codes, ``numel`` of them."""
    b = packed.reshape(-1).to(torch.int64)
    return torch.stack([b & 0xF, b >> 4], dim=1).reshape(-1)[:numel]


def encode_with(x: torch.Tensor, scales: torch.Tensor, signed: bool) -> torch.Tensor:
    """Packed codes of fp32 ``x`` (any shape, flattened) against given per-block ``scales``."""
    flat = x.reshape(-1).to(_F64)
    s = _per_element(scales.to(_F64), flat.numel())
    xhat = (flat / torch.where(s == 0, 1.0, s)).to(torch.float32)
    code = torch.bucketize(xhat.to(_F64), thresholds(signed, x.device).to(_F64), right=False)
    code = torch.where(xhat.isnan(), 0, code)
    if not signed:
        lowest = _per_element(lowest_positive_code(scales), flat.numel())
        code = torch.where(flat > 0, torch.maximum(code, lowest), code)
    return pack(code)


def encode(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed codes, scales) of fp32 ``x``."""
    scales = block_absmax(x)
    return encode_with(x, scales, signed), scales


def decode(codes: torch.Tensor, scales: torch.Tensor, signed: bool, shape) -> torch.Tensor:
    """fp32 values of packed ``codes`` for a tensor of ``shape``: map[code] * scale."""
    numel = int(torch.Size(shape).numel())
    values = qmap(signed, codes.device).to(_F64)[unpack(codes, numel)]
    s = _per_element(scales.to(_F64), numel)
    return (values * s).to(torch.float32).reshape(shape)


def zero_rule(m_codes: torch.Tensor, v_codes: torch.Tensor, v_scales: torch.Tensor, numel: int) -> torch.Tensor:
    """exp_avg's packed codes with the zero code wherever the second moment (its packed codes and
    scales) decodes to 0."""
    v = decode(v_codes, v_scales, False, (numel,))
    m = unpack(m_codes, numel)
    return pack(torch.where(v == 0, ZERO_CODE[True], m))


def new_state(key: str, p: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh 4-bit state: the zero code (7 signed, 0 unsigned) for the local elements, zero scales."""
    zero = ZERO_CODE[key == "exp_avg"]
    n = local.numel()
    codes = pack(torch.full((n,), zero, dtype=torch.int64)).to(local.device)
    return codes, torch.zeros(n_blocks(n), dtype=torch.float32, device=local.device)


_TABLES = {"signed_map": SIGNED_MAP_BITS, "unsigned_map": UNSIGNED_MAP_BITS,
           "signed_thresholds": SIGNED_THRESHOLD_BITS, "unsigned_thresholds": UNSIGNED_THRESHOLD_BITS}
