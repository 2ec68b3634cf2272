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
are written below as fp32 words and never computed at run time (tests/formats checks them
against both libraries where installed, and against the definition always). The same
words are in csrc/q8_blockwise.h, for the C++ and CUDA kernels.

Everything here is the reference's style: each fp32 op done in float64 on fp32 inputs and
rounded to fp32 after it (core/reference.py's note), and comparisons.
"""
from __future__ import annotations

import functools

import torch

BLOCK = 256             # elements per scale
MIN_NUMEL = 4096        # a tensor with fewer elements keeps fp32 states (norms, biases), as bitsandbytes
FORMAT_VERSION = 2      # the native state dict's version of this format (1: codes under the moment's own key)
READ_VERSIONS = (1, 2)  # versions a state dict is read in
STATE_DTYPE = "8bit"    # the group option that selects it
SCALE_SUFFIX = "_scale"
CODES_SUFFIX = "_q8"    # codes live under "exp_avg_q8", never "exp_avg": torch.optim.AdamW reads that key
ZERO_CODE = {True: 127, False: 0}  # signed map, unsigned map

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


def zero_rule(m_codes: torch.Tensor, v_codes: torch.Tensor) -> torch.Tensor:
    """exp_avg's codes with the zero code wherever the second moment's (``v_codes``: exp_avg_sq's,
    or max_exp_avg_sq's with amsgrad; same shape) is 0: where v decodes to 0, m decodes to 0."""
    return torch.where(v_codes == 0, ZERO_CODE[True], m_codes).to(torch.uint8)


def encode(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales) of fp32 ``x``: codes uint8 of x's shape, scales fp32 [n_blocks]."""
    scales = block_absmax(x)
    return encode_with(x, scales, signed), scales


def decode(codes: torch.Tensor, scales: torch.Tensor, signed: bool) -> torch.Tensor:
    """fp32 values of ``codes`` (uint8, any shape): map[code] * scale, one fp32 multiply."""
    values = qmap(signed, codes.device).to(_F64)[codes.reshape(-1).to(torch.int64)]
    s = _per_element(scales.to(_F64), codes.numel())
    return (values * s).to(torch.float32).reshape(codes.shape)


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


# --- the tables: fp32 words (bitsandbytes 0.50.2 create_dynamic_map; thresholds as the module doc) ---
SIGNED_MAP_BITS = (  # fp32 words, ascending
    0xBF7E3333, 0xBF7A999A, 0xBF770000, 0xBF736666, 0xBF6FCCCD, 0xBF6C3333, 0xBF68999A, 0xBF650000,
    0xBF616666, 0xBF5DCCCD, 0xBF5A3333, 0xBF56999A, 0xBF530000, 0xBF4F6666, 0xBF4BCCCD, 0xBF483333,
    0xBF44999A, 0xBF410000, 0xBF3D6666, 0xBF39CCCD, 0xBF363334, 0xBF32999A, 0xBF2F0000, 0xBF2B6666,
    0xBF27CCCD, 0xBF243334, 0xBF20999A, 0xBF1D0000, 0xBF196666, 0xBF15CCCD, 0xBF123334, 0xBF0E999A,
    0xBF0B0000, 0xBF076666, 0xBF03CCCC, 0xBF003333, 0xBEF93332, 0xBEF20000, 0xBEEACCCC, 0xBEE3999A,
    0xBEDC6666, 0xBED53333, 0xBECE0000, 0xBEC6CCCC, 0xBEBF999A, 0xBEB86666, 0xBEB13333, 0xBEAA0000,
    0xBEA2CCCC, 0xBE9B999A, 0xBE946666, 0xBE8D3334, 0xBE860000, 0xBE7D9999, 0xBE6F3333, 0xBE60CCCD,
    0xBE526666, 0xBE440000, 0xBE35999A, 0xBE273333, 0xBE18CCCD, 0xBE0A6666, 0xBDF80000, 0xBDDB3334,
    0xBDC9EB85, 0xBDC428F7, 0xBDBE6667, 0xBDB8A3D7, 0xBDB2E148, 0xBDAD1EB8, 0xBDA75C2A, 0xBDA1999A,
    0xBD9BD70A, 0xBD96147B, 0xBD9051EB, 0xBD8A8F5D, 0xBD84CCCD, 0xBD7E147B, 0xBD728F5D, 0xBD670A3D,
    0xBD5B851F, 0xBD500000, 0xBD447AE1, 0xBD38F5C3, 0xBD2D70A3, 0xBD21EB85, 0xBD166667, 0xBD0AE148,
    0xBCFEB852, 0xBCE7AE15, 0xBCD0A3D7, 0xBCB9999A, 0xBCA28F5D, 0xBC8B851F, 0xBC68F5C3, 0xBC3AE148,
    0xBC1F3B64, 0xBC160418, 0xBC0CCCCD, 0xBC039581, 0xBBF4BC6A, 0xBBE24DD3, 0xBBCFDF3B, 0xBBBD70A4,
    0xBBAB020D, 0xBB989374, 0xBB8624DD, 0xBB676C8A, 0xBB428F5C, 0xBB1DB22D, 0xBAF1A9FC, 0xBAA7EF9D,
    0xBA7765FF, 0xBA59E83E, 0xBA3C6A80, 0xBA1EECC1, 0xBA016F01, 0xB9C7E283, 0xB98CE705, 0xB923D70B,
    0xB8BA1F4B, 0xB88AEFB3, 0xB8378034, 0xB7B24206, 0xB70205FF, 0xB65A1A94, 0xB513A3B7, 0x00000000,
    0x3513A3B7, 0x365A1A94, 0x370205FF, 0x37B24206, 0x38378034, 0x388AEFB3, 0x38BA1F4B, 0x3923D70B,
    0x398CE705, 0x39C7E283, 0x3A016F01, 0x3A1EECC1, 0x3A3C6A80, 0x3A59E83E, 0x3A7765FF, 0x3AA7EF9D,
    0x3AF1A9FC, 0x3B1DB22D, 0x3B428F5C, 0x3B676C8A, 0x3B8624DD, 0x3B989374, 0x3BAB020D, 0x3BBD70A4,
    0x3BCFDF3B, 0x3BE24DD3, 0x3BF4BC6A, 0x3C039581, 0x3C0CCCCD, 0x3C160418, 0x3C1F3B64, 0x3C3AE148,
    0x3C68F5C3, 0x3C8B851F, 0x3CA28F5D, 0x3CB9999A, 0x3CD0A3D7, 0x3CE7AE15, 0x3CFEB852, 0x3D0AE148,
    0x3D166667, 0x3D21EB85, 0x3D2D70A3, 0x3D38F5C3, 0x3D447AE1, 0x3D500000, 0x3D5B851F, 0x3D670A3D,
    0x3D728F5D, 0x3D7E147B, 0x3D84CCCD, 0x3D8A8F5D, 0x3D9051EB, 0x3D96147B, 0x3D9BD70A, 0x3DA1999A,
    0x3DA75C2A, 0x3DAD1EB8, 0x3DB2E148, 0x3DB8A3D7, 0x3DBE6667, 0x3DC428F7, 0x3DC9EB85, 0x3DDB3334,
    0x3DF80000, 0x3E0A6666, 0x3E18CCCD, 0x3E273333, 0x3E35999A, 0x3E440000, 0x3E526666, 0x3E60CCCD,
    0x3E6F3333, 0x3E7D9999, 0x3E860000, 0x3E8D3334, 0x3E946666, 0x3E9B999A, 0x3EA2CCCC, 0x3EAA0000,
    0x3EB13333, 0x3EB86666, 0x3EBF999A, 0x3EC6CCCC, 0x3ECE0000, 0x3ED53333, 0x3EDC6666, 0x3EE3999A,
    0x3EEACCCC, 0x3EF20000, 0x3EF93332, 0x3F003333, 0x3F03CCCC, 0x3F076666, 0x3F0B0000, 0x3F0E999A,
    0x3F123334, 0x3F15CCCD, 0x3F196666, 0x3F1D0000, 0x3F20999A, 0x3F243334, 0x3F27CCCD, 0x3F2B6666,
    0x3F2F0000, 0x3F32999A, 0x3F363334, 0x3F39CCCD, 0x3F3D6666, 0x3F410000, 0x3F44999A, 0x3F483333,
    0x3F4BCCCD, 0x3F4F6666, 0x3F530000, 0x3F56999A, 0x3F5A3333, 0x3F5DCCCD, 0x3F616666, 0x3F650000,
    0x3F68999A, 0x3F6C3333, 0x3F6FCCCD, 0x3F736666, 0x3F770000, 0x3F7A999A, 0x3F7E3333, 0x3F800000,
)
SIGNED_THRESHOLD_BITS = (  # fp32 words, ascending
    0xBF7C6667, 0xBF78CCCD, 0xBF753333, 0xBF71999A, 0xBF6E0000, 0xBF6A6667, 0xBF66CCCD, 0xBF633333,
    0xBF5F999A, 0xBF5C0000, 0xBF586667, 0xBF54CCCD, 0xBF513333, 0xBF4D999A, 0xBF4A0000, 0xBF466667,
    0xBF42CCCD, 0xBF3F3333, 0xBF3B999A, 0xBF380001, 0xBF346667, 0xBF30CCCD, 0xBF2D3333, 0xBF29999A,
    0xBF260001, 0xBF226667, 0xBF1ECCCD, 0xBF1B3333, 0xBF17999A, 0xBF140001, 0xBF106667, 0xBF0CCCCD,
    0xBF093333, 0xBF059999, 0xBF020000, 0xBEFCCCCC, 0xBEF59999, 0xBEEE6666, 0xBEE73333, 0xBEE00000,
    0xBED8CCCD, 0xBED1999A, 0xBECA6666, 0xBEC33333, 0xBEBC0000, 0xBEB4CCCD, 0xBEAD999A, 0xBEA66666,
    0xBE9F3333, 0xBE980000, 0xBE90CCCD, 0xBE89999A, 0xBE826667, 0xBE766666, 0xBE680000, 0xBE59999A,
    0xBE4B3333, 0xBE3CCCCD, 0xBE2E6667, 0xBE200000, 0xBE11999A, 0xBE033333, 0xBDE9999A, 0xBDD28F5D,
    0xBDC70A3E, 0xBDC147AF, 0xBDBB851F, 0xBDB5C290, 0xBDB00000, 0xBDAA3D71, 0xBDA47AE2, 0xBD9EB852,
    0xBD98F5C3, 0xBD933333, 0xBD8D70A4, 0xBD87AE15, 0xBD81EB86, 0xBD7851EC, 0xBD6CCCCD, 0xBD6147AE,
    0xBD55C290, 0xBD4A3D71, 0xBD3EB852, 0xBD333333, 0xBD27AE14, 0xBD1C28F6, 0xBD10A3D8, 0xBD051EB9,
    0xBCF33334, 0xBCDC28F6, 0xBCC51EB9, 0xBCAE147C, 0xBC970A3E, 0xBC800001, 0xBC51EB86, 0xBC2D0E56,
    0xBC1A9FBE, 0xBC116873, 0xBC083127, 0xBBFDF3B6, 0xBBEB851F, 0xBBD91687, 0xBBC6A7F0, 0xBBB43959,
    0xBBA1CAC1, 0xBB8F5C29, 0xBB79DB22, 0xBB54FDF3, 0xBB3020C5, 0xBB0B4396, 0xBACCCCCD, 0xBA91D14F,
    0xBA68A71F, 0xBA4B295F, 0xBA2DABA1, 0xBA102DE1, 0xB9E56043, 0xB9AA64C4, 0xB95ED28B, 0xB9007359,
    0xB8A2877F, 0xB866AFCD, 0xB808509C, 0xB7734506, 0xB6B88CA4, 0xB5FF0382, 0x80000001, 0x00000000,
    0x35FF0381, 0x36B88CA4, 0x37734505, 0x3808509B, 0x3866AFCD, 0x38A2877F, 0x39007358, 0x395ED28A,
    0x39AA64C4, 0x39E56042, 0x3A102DE1, 0x3A2DABA0, 0x3A4B295F, 0x3A68A71E, 0x3A91D14E, 0x3ACCCCCC,
    0x3B0B4395, 0x3B3020C4, 0x3B54FDF3, 0x3B79DB22, 0x3B8F5C28, 0x3BA1CAC0, 0x3BB43958, 0x3BC6A7EF,
    0x3BD91687, 0x3BEB851E, 0x3BFDF3B6, 0x3C083127, 0x3C116872, 0x3C1A9FBE, 0x3C2D0E56, 0x3C51EB85,
    0x3C800000, 0x3C970A3E, 0x3CAE147B, 0x3CC51EB8, 0x3CDC28F6, 0x3CF33333, 0x3D051EB8, 0x3D10A3D7,
    0x3D1C28F6, 0x3D27AE14, 0x3D333333, 0x3D3EB852, 0x3D4A3D70, 0x3D55C28F, 0x3D6147AE, 0x3D6CCCCD,
    0x3D7851EC, 0x3D81EB85, 0x3D87AE15, 0x3D8D70A4, 0x3D933333, 0x3D98F5C2, 0x3D9EB852, 0x3DA47AE2,
    0x3DAA3D71, 0x3DB00000, 0x3DB5C28F, 0x3DBB851F, 0x3DC147AF, 0x3DC70A3E, 0x3DD28F5C, 0x3DE9999A,
    0x3E033333, 0x3E119999, 0x3E200000, 0x3E2E6666, 0x3E3CCCCD, 0x3E4B3333, 0x3E599999, 0x3E680000,
    0x3E766666, 0x3E826666, 0x3E89999A, 0x3E90CCCD, 0x3E980000, 0x3E9F3333, 0x3EA66666, 0x3EAD9999,
    0x3EB4CCCC, 0x3EBC0000, 0x3EC33333, 0x3ECA6666, 0x3ED19999, 0x3ED8CCCC, 0x3EE00000, 0x3EE73333,
    0x3EEE6666, 0x3EF59999, 0x3EFCCCCC, 0x3F01FFFF, 0x3F059999, 0x3F093333, 0x3F0CCCCD, 0x3F106667,
    0x3F140000, 0x3F179999, 0x3F1B3333, 0x3F1ECCCD, 0x3F226667, 0x3F260000, 0x3F299999, 0x3F2D3333,
    0x3F30CCCD, 0x3F346667, 0x3F380000, 0x3F3B9999, 0x3F3F3333, 0x3F42CCCD, 0x3F466666, 0x3F4A0000,
    0x3F4D9999, 0x3F513333, 0x3F54CCCD, 0x3F586666, 0x3F5C0000, 0x3F5F9999, 0x3F633333, 0x3F66CCCD,
    0x3F6A6666, 0x3F6E0000, 0x3F719999, 0x3F753333, 0x3F78CCCD, 0x3F7C6666, 0x3F7F1999,
)
UNSIGNED_MAP_BITS = (  # fp32 words, ascending
    0x00000000, 0x34AE7BAA, 0x35500998, 0x360E9B38, 0x3692CCF6, 0x36DE4C51, 0x3714E5D5, 0x3783126E,
    0x37E171A0, 0x381FE868, 0x384F1800, 0x387E479A, 0x3896BB99, 0x38AE5364, 0x38C5EB31, 0x3906594B,
    0x394154CA, 0x397C5049, 0x399BA5E4, 0x39B923A2, 0x39D6A163, 0x39F41F22, 0x3A08CE71, 0x3A178D50,
    0x3A264C30, 0x3A350B10, 0x3A43C9EF, 0x3A5288D0, 0x3A6147AF, 0x3A70068E, 0x3A7EC56E, 0x3A958106,
    0x3ABA5E35, 0x3ADF3B64, 0x3B020C4A, 0x3B147AE1, 0x3B26E978, 0x3B395810, 0x3B4BC6A7, 0x3B5E3540,
    0x3B70A3D7, 0x3B818937, 0x3B8AC082, 0x3B93F7CF, 0x3B9D2F1A, 0x3BA66666, 0x3BAF9DB2, 0x3BB8D4FD,
    0x3BC20C4A, 0x3BCB4395, 0x3BD47AE1, 0x3BDDB22E, 0x3BE6E978, 0x3BF020C5, 0x3BF9580F, 0x3C0147AE,
    0x3C05E354, 0x3C0A7EF9, 0x3C0F1AA0, 0x3C13B645, 0x3C1851EB, 0x3C1CED92, 0x3C218937, 0x3C2F5C2A,
    0x3C466667, 0x3C5D70A3, 0x3C747AE2, 0x3C85C28F, 0x3C9147AF, 0x3C9CCCCD, 0x3CA851EB, 0x3CB3D70B,
    0x3CBF5C29, 0x3CCAE147, 0x3CD66667, 0x3CE1EB87, 0x3CED70A3, 0x3CF8F5C3, 0x3D023D70, 0x3D080000,
    0x3D0DC28F, 0x3D13851F, 0x3D1947AF, 0x3D1F0A3D, 0x3D24CCCD, 0x3D2A8F5C, 0x3D3051EB, 0x3D36147B,
    0x3D3BD70A, 0x3D41999A, 0x3D475C28, 0x3D4D1EB8, 0x3D52E147, 0x3D58A3D7, 0x3D5E6667, 0x3D6428F7,
    0x3D69EB87, 0x3D6FAE15, 0x3D7570A3, 0x3D7B3333, 0x3D807AE2, 0x3D835C2A, 0x3D863D71, 0x3D891EB8,
    0x3D8C0000, 0x3D8EE148, 0x3D91C290, 0x3D94A3D7, 0x3D97851F, 0x3D9A6667, 0x3D9D47AF, 0x3DA028F6,
    0x3DA30A3E, 0x3DA5EB85, 0x3DA8CCCD, 0x3DABAE15, 0x3DAE8F5C, 0x3DB170A4, 0x3DB451EB, 0x3DB73333,
    0x3DBA147B, 0x3DBCF5C3, 0x3DBFD70B, 0x3DC2B852, 0x3DC5999A, 0x3DC87AE2, 0x3DCB5C29, 0x3DD40000,
    0x3DE26666, 0x3DF0CCCD, 0x3DFF3333, 0x3E06CCCC, 0x3E0E0000, 0x3E153334, 0x3E1C6666, 0x3E23999A,
    0x3E2ACCCC, 0x3E320000, 0x3E393334, 0x3E406666, 0x3E47999A, 0x3E4ECCCC, 0x3E560000, 0x3E5D3334,
    0x3E646666, 0x3E6B999A, 0x3E72CCCC, 0x3E7A0000, 0x3E809999, 0x3E843333, 0x3E87CCCD, 0x3E8B6666,
    0x3E8F0000, 0x3E92999A, 0x3E963333, 0x3E99CCCC, 0x3E9D6666, 0x3EA10000, 0x3EA4999A, 0x3EA83333,
    0x3EABCCCC, 0x3EAF6666, 0x3EB30000, 0x3EB6999A, 0x3EBA3333, 0x3EBDCCCC, 0x3EC16666, 0x3EC50000,
    0x3EC8999A, 0x3ECC3333, 0x3ECFCCCC, 0x3ED36666, 0x3ED70000, 0x3EDA999A, 0x3EDE3333, 0x3EE1CCCC,
    0x3EE56666, 0x3EE90000, 0x3EEC999A, 0x3EF03333, 0x3EF3CCCC, 0x3EF76666, 0x3EFB0000, 0x3EFE9999,
    0x3F01199A, 0x3F02E666, 0x3F04B333, 0x3F068000, 0x3F084CCC, 0x3F0A199A, 0x3F0BE666, 0x3F0DB334,
    0x3F0F8000, 0x3F114CCD, 0x3F13199A, 0x3F14E666, 0x3F16B334, 0x3F188000, 0x3F1A4CCD, 0x3F1C199A,
    0x3F1DE666, 0x3F1FB334, 0x3F218000, 0x3F234CCD, 0x3F25199A, 0x3F26E666, 0x3F28B334, 0x3F2A8000,
    0x3F2C4CCD, 0x3F2E199A, 0x3F2FE666, 0x3F31B334, 0x3F338000, 0x3F354CCD, 0x3F37199A, 0x3F38E666,
    0x3F3AB334, 0x3F3C8000, 0x3F3E4CCD, 0x3F40199A, 0x3F41E666, 0x3F43B334, 0x3F458000, 0x3F474CCC,
    0x3F49199A, 0x3F4AE666, 0x3F4CB334, 0x3F4E8000, 0x3F504CCC, 0x3F52199A, 0x3F53E666, 0x3F55B334,
    0x3F578000, 0x3F594CCC, 0x3F5B199A, 0x3F5CE666, 0x3F5EB334, 0x3F608000, 0x3F624CCC, 0x3F64199A,
    0x3F65E666, 0x3F67B334, 0x3F698000, 0x3F6B4CCC, 0x3F6D199A, 0x3F6EE666, 0x3F70B334, 0x3F728000,
    0x3F744CCC, 0x3F76199A, 0x3F77E666, 0x3F79B334, 0x3F7B8000, 0x3F7D4CCC, 0x3F7F199A, 0x3F800000,
)
UNSIGNED_THRESHOLD_BITS = (  # fp32 words, ascending
    0x00000000, 0x3513A3B6, 0x35C29D9E, 0x365A1A92, 0x36B88CA3, 0x370205FE, 0x374D8558, 0x37B24207,
    0x3808509C, 0x38378034, 0x3866AFCD, 0x388AEFB3, 0x38A2877E, 0x38BA1F4A, 0x38E94EE3, 0x3923D70A,
    0x395ED289, 0x398CE704, 0x39AA64C3, 0x39C7E282, 0x39E56042, 0x3A016F01, 0x3A102DE0, 0x3A1EECC0,
    0x3A2DABA0, 0x3A3C6A7F, 0x3A4B295F, 0x3A59E83F, 0x3A68A71E, 0x3A7765FE, 0x3A8A71DE, 0x3AA7EF9D,
    0x3ACCCCCC, 0x3AF1A9FC, 0x3B0B4395, 0x3B1DB22C, 0x3B3020C4, 0x3B428F5B, 0x3B54FDF3, 0x3B676C8B,
    0x3B79DB22, 0x3B8624DC, 0x3B8F5C28, 0x3B989374, 0x3BA1CAC0, 0x3BAB020C, 0x3BB43957, 0x3BBD70A3,
    0x3BC6A7EF, 0x3BCFDF3B, 0x3BD91687, 0x3BE24DD3, 0x3BEB851E, 0x3BF4BC6A, 0x3BFDF3B5, 0x3C039581,
    0x3C083126, 0x3C0CCCCC, 0x3C116872, 0x3C160418, 0x3C1A9FBE, 0x3C1F3B64, 0x3C2872B0, 0x3C3AE148,
    0x3C51EB85, 0x3C68F5C2, 0x3C800000, 0x3C8B851F, 0x3C970A3E, 0x3CA28F5C, 0x3CAE147B, 0x3CB9999A,
    0x3CC51EB8, 0x3CD0A3D7, 0x3CDC28F7, 0x3CE7AE15, 0x3CF33333, 0x3CFEB851, 0x3D051EB8, 0x3D0AE147,
    0x3D10A3D7, 0x3D166667, 0x3D1C28F6, 0x3D21EB85, 0x3D27AE14, 0x3D2D70A3, 0x3D333333, 0x3D38F5C2,
    0x3D3EB852, 0x3D447AE1, 0x3D4A3D70, 0x3D4FFFFF, 0x3D55C28F, 0x3D5B851F, 0x3D6147AF, 0x3D670A3F,
    0x3D6CCCCE, 0x3D728F5C, 0x3D7851EB, 0x3D7E147B, 0x3D81EB86, 0x3D84CCCD, 0x3D87AE14, 0x3D8A8F5C,
    0x3D8D70A4, 0x3D9051EC, 0x3D933333, 0x3D96147B, 0x3D98F5C3, 0x3D9BD70B, 0x3D9EB852, 0x3DA1999A,
    0x3DA47AE1, 0x3DA75C29, 0x3DAA3D71, 0x3DAD1EB8, 0x3DB00000, 0x3DB2E147, 0x3DB5C28F, 0x3DB8A3D7,
    0x3DBB851F, 0x3DBE6667, 0x3DC147AE, 0x3DC428F6, 0x3DC70A3E, 0x3DC9EB85, 0x3DCFAE14, 0x3DDB3333,
    0x3DE99999, 0x3DF80000, 0x3E033332, 0x3E0A6666, 0x3E11999A, 0x3E18CCCD, 0x3E200000, 0x3E273333,
    0x3E2E6666, 0x3E35999A, 0x3E3CCCCD, 0x3E440000, 0x3E4B3333, 0x3E526666, 0x3E59999A, 0x3E60CCCD,
    0x3E680000, 0x3E6F3333, 0x3E766666, 0x3E7D9999, 0x3E826666, 0x3E860000, 0x3E899999, 0x3E8D3333,
    0x3E90CCCD, 0x3E946666, 0x3E97FFFF, 0x3E9B9999, 0x3E9F3333, 0x3EA2CCCD, 0x3EA66666, 0x3EA9FFFF,
    0x3EAD9999, 0x3EB13333, 0x3EB4CCCD, 0x3EB86666, 0x3EBBFFFF, 0x3EBF9999, 0x3EC33333, 0x3EC6CCCD,
    0x3ECA6666, 0x3ECDFFFF, 0x3ED19999, 0x3ED53333, 0x3ED8CCCD, 0x3EDC6666, 0x3EDFFFFF, 0x3EE39999,
    0x3EE73333, 0x3EEACCCD, 0x3EEE6666, 0x3EF1FFFF, 0x3EF59999, 0x3EF93333, 0x3EFCCCCC, 0x3F003333,
    0x3F020000, 0x3F03CCCC, 0x3F059999, 0x3F076666, 0x3F093333, 0x3F0B0000, 0x3F0CCCCD, 0x3F0E999A,
    0x3F106666, 0x3F123333, 0x3F140000, 0x3F15CCCD, 0x3F17999A, 0x3F196666, 0x3F1B3333, 0x3F1D0000,
    0x3F1ECCCD, 0x3F20999A, 0x3F226666, 0x3F243333, 0x3F260000, 0x3F27CCCD, 0x3F29999A, 0x3F2B6666,
    0x3F2D3333, 0x3F2F0000, 0x3F30CCCD, 0x3F32999A, 0x3F346666, 0x3F363333, 0x3F380000, 0x3F39CCCD,
    0x3F3B999A, 0x3F3D6666, 0x3F3F3333, 0x3F410000, 0x3F42CCCD, 0x3F44999A, 0x3F466666, 0x3F483333,
    0x3F4A0000, 0x3F4BCCCD, 0x3F4D999A, 0x3F4F6666, 0x3F513333, 0x3F530000, 0x3F54CCCD, 0x3F56999A,
    0x3F586666, 0x3F5A3333, 0x3F5C0000, 0x3F5DCCCD, 0x3F5F999A, 0x3F616666, 0x3F633333, 0x3F650000,
    0x3F66CCCD, 0x3F68999A, 0x3F6A6666, 0x3F6C3333, 0x3F6E0000, 0x3F6FCCCD, 0x3F71999A, 0x3F736666,
    0x3F753333, 0x3F770000, 0x3F78CCCD, 0x3F7A999A, 0x3F7C6666, 0x3F7E3333, 0x3F7F8CCD,
)

_TABLES = {"signed_map": SIGNED_MAP_BITS, "unsigned_map": UNSIGNED_MAP_BITS,
           "signed_thresholds": SIGNED_THRESHOLD_BITS, "unsigned_thresholds": UNSIGNED_THRESHOLD_BITS}
