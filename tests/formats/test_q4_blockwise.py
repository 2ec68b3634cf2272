"""The 4-bit blockwise format alone (adamw_tau/formats/q4_blockwise.py): its hard-coded tables
against their definition (torchao's AdamW4bit: lpmm's signed dynamic map, the zero-free linear
map), the encoder against a brute-force nearest search with the tie rule pinned, packing (low
nibble first, odd sizes), and the zero, NaN and underflow rules."""
import re
from pathlib import Path

import pytest
import torch

from adamw_tau.formats import q4_blockwise as q4
from adamw_tau.formats import registry

HEADER = Path(__file__).resolve().parents[2] / "csrc" / "q4_blockwise.h"


def _bits(t: torch.Tensor) -> list[int]:
    return [w & 0xFFFFFFFF for w in t.view(torch.int32).tolist()]


def _signed_recipe() -> torch.Tensor:
    """bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=3, total_bits=4) without
    its zero padding (torchao's copy): 3 decades, in decade i the means of 2^i + 1 evenly spaced
    points of [0.1, 1] times 10^(i-2), both signs; then 0 and 1."""
    data = []
    for i in range(3):
        b = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        means = (b[:-1] + b[1:]) / 2.0
        data += (10 ** (i - 2) * means).tolist() + (-(10 ** (i - 2)) * means).tolist()
    return torch.tensor(sorted(data + [0.0, 1.0]), dtype=torch.float32)


def test_the_maps_are_torchaos():
    assert _bits(q4.qmap(True)) == _bits(_signed_recipe())
    assert _bits(q4.qmap(False)) == _bits(torch.linspace(0, 1, 17)[1:])  # no zero
    assert q4.qmap(True)[q4.ZERO_CODE[True]].item() == 0.0 and 0.0 not in q4.qmap(False).tolist()


@pytest.mark.parametrize("signed", [True, False])
def test_the_thresholds_are_the_midpoints_rounded_down(signed):
    m = q4.qmap(signed).double()
    mid = (m[:-1] + m[1:]) / 2
    t = q4.thresholds(signed).double()
    assert bool((t <= mid).all())
    assert bool((torch.nextafter(q4.thresholds(signed), torch.tensor(float("inf"))).double() > mid).all())


def _header_words(name: str) -> list[int]:
    lines = HEADER.read_text().splitlines()
    start = lines.index(f"#define {name} \\")
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    return [int(w, 16) for w in re.findall(r"0x([0-9A-Fa-f]{8})u", "\n".join(lines[start:end + 1]))]


@pytest.mark.parametrize("name,table", [("ADAMW_Q4_SIGNED_MAP", q4.SIGNED_MAP_BITS),
                                        ("ADAMW_Q4_UNSIGNED_MAP", q4.UNSIGNED_MAP_BITS),
                                        ("ADAMW_Q4_SIGNED_THRESHOLDS", q4.SIGNED_THRESHOLD_BITS),
                                        ("ADAMW_Q4_UNSIGNED_THRESHOLDS", q4.UNSIGNED_THRESHOLD_BITS)])
def test_the_kernels_tables_are_these(name, table):
    assert _header_words(name) == list(table)


@pytest.mark.parametrize("signed", [True, False])
def test_codes_are_the_nearest_map_value_ties_down(signed):
    """x̂ = x / max against a brute-force argmin (the first minimum: ties to the lower code), on
    random values, every map value, every threshold and its neighbours, and exact midpoints."""
    gen = torch.Generator().manual_seed(0)
    m, thr = q4.qmap(signed), q4.thresholds(signed)
    up = torch.nextafter(thr, torch.full_like(thr, float("inf")))
    rand = torch.rand(4000, generator=gen) * (2 if signed else 1) - (1 if signed else 0)
    xhat = torch.cat([rand, m, thr, up, ((m[:-1].double() + m[1:].double()) / 2).float()])
    xhat = xhat[xhat.abs() <= 1]
    x = torch.cat([torch.ones(1), xhat])  # a block max of exactly 1: x / max == x̂
    x = torch.nn.functional.pad(x, (0, q4.BLOCK - x.numel() % q4.BLOCK))
    x[torch.arange(0, x.numel(), q4.BLOCK)] = 1.0
    codes, scales = q4.encode(x, signed)
    got = q4.unpack(codes, x.numel())
    dist = (x.double().reshape(-1, 1) - m.double().reshape(1, -1)).abs()
    want = dist.argmin(dim=1)
    assert bool((scales == 1.0).all()) and torch.equal(got, want)


def test_packing_is_low_nibble_first_and_odd_sizes_end_in_zero():
    codes = torch.tensor([1, 2, 3, 4, 5])
    packed = q4.pack(codes)
    assert packed.tolist() == [0x21, 0x43, 0x05]
    assert torch.equal(q4.unpack(packed, 5), codes)


def test_zero_nan_and_underflow_rules():
    # a NaN makes its block's scale NaN and its code 0; an all-zero block decodes to 0
    x = torch.zeros(2 * q4.BLOCK)
    x[3] = float("nan")
    codes, scales = q4.encode(x, True)
    assert scales[0].isnan() and scales[1].item() == 0.0
    assert q4.unpack(codes, x.numel())[3].item() == 0
    assert bool((q4.decode(codes, scales, True, x.shape)[q4.BLOCK:] == 0).all())
    # the zero-free map: a zero second moment beside a positive one still decodes above 0
    v = torch.zeros(q4.BLOCK)
    v[0] = 1.0
    vc, vs = q4.encode(v, False)
    assert bool((q4.decode(vc, vs, False, v.shape) > 0).all())
    # a tiny subnormal scale: a positive value takes the lowest code that does not decode to 0
    tiny = torch.tensor([2.0 ** -148, 2.0 ** -149] + [0.0] * (q4.BLOCK - 2))
    tc, ts = q4.encode(tiny, False)
    dec = q4.decode(tc, ts, False, tiny.shape)
    assert dec[0] > 0 and dec[1] > 0 and q4.lowest_positive_code(ts).item() > 0
    # where v decodes to 0 (an all-zero block), m takes the zero code
    m = torch.full((q4.BLOCK,), 0.5)
    mc, _ = q4.encode(m, True)
    zc, zs = q4.encode(torch.zeros(q4.BLOCK), False)
    assert bool((q4.unpack(q4.zero_rule(mc, zc, zs, q4.BLOCK), q4.BLOCK) == q4.ZERO_CODE[True]).all())


def test_the_registry_keys_do_not_collide():
    keys = {f.name: f.key("exp_avg") for f in registry.STATE_FORMATS.values()}
    assert keys["q4"] == "exp_avg_q4" and keys["q8"] == "exp_avg_q8"
    assert len({keys["q4"], keys["q8"], keys["fp32"]}) == 3
