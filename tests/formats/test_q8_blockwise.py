"""The 8-bit blockwise format alone (adamw_tau/formats/q8_blockwise.py): its hard-coded tables,
the encoder against a brute-force nearest search with the tie rule pinned, and the zero,
NaN and block rules."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from required import require_package

from adamw_tau.formats import q8_blockwise as q8
from adamw_tau.testing.bits import differing

HEADER = Path(__file__).resolve().parents[2] / "csrc" / "q8_blockwise.h"


def _bits(t: torch.Tensor) -> list[int]:
    return [w & 0xFFFFFFFF for w in t.view(torch.int32).tolist()]


def _recipe(signed: bool) -> torch.Tensor:
    """The dynamic map from its definition (Dettmers et al.: a dynamic exponent, the fraction's
    bits shrinking as it grows), written down here in fp32 as bitsandbytes' create_dynamic_map
    computes it: 7 decades, in decade i the means of the (2^i or 2^(i+1)) + 1 evenly spaced
    points of [0.1, 1] times 10^(i-6); then 0 and 1."""
    data = []
    for i in range(7):
        n = (2 ** i if signed else 2 ** (i + 1)) + 1
        b = torch.linspace(0.1, 1, n, dtype=torch.float32)
        means = (b[:-1] + b[1:]) / 2.0
        data += (10 ** (i - 6) * means).tolist()
        if signed:
            data += (-(10 ** (i - 6)) * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32)


def _exact(signed: bool) -> np.ndarray:
    """The same map in exact (float64) arithmetic: what the fp32 recipe approximates."""
    data = [0.0, 1.0]
    for i in range(7):
        n = (2 ** i if signed else 2 ** (i + 1)) + 1
        for j in range(n - 1):
            x = (0.1 + 0.9 * (j + 0.5) / (n - 1)) * 10.0 ** (i - 6)
            data += [x, -x] if signed else [x]
    return np.array(sorted(data))


@pytest.mark.parametrize("signed", [True, False])
def test_the_maps_have_the_documented_shape(signed):
    m = q8.qmap(signed)
    assert m.dtype == torch.float32 and m.numel() == 256
    assert bool((m[1:] > m[:-1]).all()), "ascending, no repeats"
    assert m[-1].item() == 1.0 and -1.0 not in m.tolist()
    assert (m == 0).sum().item() == 1 and m[q8.ZERO_CODE[signed]].item() == 0.0
    assert (m < 0).sum().item() == (127 if signed else 0) and (m > 0).sum().item() == (128 if signed else 255)


@pytest.mark.parametrize("signed", [True, False])
def test_the_maps_follow_the_definition(signed):
    """Always runs: the hard-coded words are the fp32 recipe's, and within 2 ulps of the exact values."""
    assert _bits(q8.qmap(signed)) == _bits(_recipe(signed))
    exact = _exact(signed)
    ours = q8.qmap(signed).double().numpy()
    ulp = np.spacing(np.abs(ours).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(ours - exact) <= 2 * ulp)


@pytest.mark.parametrize("signed", [True, False])
def test_the_maps_are_bitsandbytes_and_torchaos(signed):
    """Where the optional extras are installed: bit for bit their tables, so their codes read here."""
    bnb = require_package("bitsandbytes.functional", "anchors")
    assert _bits(q8.qmap(signed)) == _bits(bnb.create_dynamic_map(signed).to(torch.float32))
    tao = require_package("torchao.optim.quant_utils", "anchors")
    assert _bits(q8.qmap(signed)) == _bits(torch.tensor(tao.create_dynamic_map(signed), dtype=torch.float32))


def _round_down_midpoint(a: float, b: float) -> float:
    mid = (a + b) / 2  # exact in float64 for two fp32 values
    t = float(np.float32(mid))
    if t > mid:
        t = float(np.nextafter(np.float32(t), np.float32(-np.inf)))
    return t


@pytest.mark.parametrize("signed", [True, False])
def test_thresholds_are_midpoints_rounded_down_with_the_zero_rules(signed):
    m = q8.qmap(signed).double().tolist()
    want = [_round_down_midpoint(m[k], m[k + 1]) for k in range(255)]
    if signed:
        want[126], want[127] = -2.0 ** -149, 0.0
    else:
        want[0] = 0.0
    got = q8.thresholds(signed)
    assert got.numel() == 255 and bool((got[1:] > got[:-1]).all())
    assert differing(got, torch.tensor(want, dtype=torch.float32)) == 0


def _header_words(name: str) -> list[int]:
    lines = HEADER.read_text().splitlines()
    start = lines.index(f"#define {name} \\")  # a macro continued over the lines ending in a backslash
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    return [int(w, 16) for w in re.findall(r"0x([0-9A-Fa-f]{8})u", "\n".join(lines[start:end + 1]))]


@pytest.mark.parametrize("name,table", [("ADAMW_Q8_SIGNED_MAP", q8.SIGNED_MAP_BITS),
                                        ("ADAMW_Q8_UNSIGNED_MAP", q8.UNSIGNED_MAP_BITS),
                                        ("ADAMW_Q8_SIGNED_THRESHOLDS", q8.SIGNED_THRESHOLD_BITS),
                                        ("ADAMW_Q8_UNSIGNED_THRESHOLDS", q8.UNSIGNED_THRESHOLD_BITS)])
def test_the_kernels_tables_are_these(name, table):
    """csrc/q8_blockwise.h holds the same words (the C++ and CUDA kernels; Triton reads these)."""
    assert _header_words(name) == list(table)


def _brute_force(xhat: torch.Tensor, signed: bool) -> torch.Tensor:
    """The nearest map value's code by distance (float64; exact near every midpoint, where the two
    candidates and x̂ are within a factor 2), ties to the lower code, then the zero rules; NaN: 0."""
    m = q8.qmap(signed).double()
    x = xhat.double().reshape(-1, 1)
    dist = (x - m.reshape(1, -1)).abs()
    code = dist.argmin(dim=1)  # the first minimum: ties go to the lower code
    zero = q8.ZERO_CODE[signed]
    xs = xhat.reshape(-1)
    if signed:
        code = torch.where((code == zero) & (xs > 0), zero + 1, code)
        code = torch.where((code == zero) & (xs < 0), zero - 1, code)
    else:
        code = torch.where((code == 0) & (xs > 0), 1, code)
    return torch.where(xs.isnan(), 0, code)


def _candidates(signed: bool, gen) -> torch.Tensor:
    """x̂ values in [-1, 1] (or [0, 1]): random over many decades, every map value, every
    threshold and its fp32 neighbours, the exact midpoints that are fp32 values (the ties),
    zeros of both signs, subnormals, NaN."""
    thr = q8.thresholds(signed)
    m = q8.qmap(signed)
    up = torch.nextafter(thr, torch.full_like(thr, math.inf))
    down = torch.nextafter(thr, torch.full_like(thr, -math.inf))
    mids = ((m[:-1].double() + m[1:].double()) / 2)
    ties = mids[mids.float().double() == mids].float()
    rand = torch.rand(20000, generator=gen, dtype=torch.float64) ** 8  # many decades near 0
    rand = rand.float() * (torch.randint(0, 2, (20000,), generator=gen) * 2 - 1 if signed else 1)
    special = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.0, -1.0, float("nan")])
    xs = torch.cat([rand, m, thr, up, down, ties, special])
    return xs.clamp(-1.0, 1.0) if signed else xs.abs().clamp(max=1.0)


@pytest.mark.parametrize("signed", [True, False])
def test_codes_are_the_nearest_map_value_ties_down(signed):
    xs = _candidates(signed, torch.Generator().manual_seed(3))
    codes = q8.encode_with(xs, torch.ones(q8.n_blocks(xs.numel())), signed)  # scale 1: x̂ = x
    assert torch.equal(codes.long(), _brute_force(xs, signed))


@pytest.mark.parametrize("signed", [True, False])
def test_exact_ties_take_the_lower_code(signed):
    m = q8.qmap(signed).double()
    mids = (m[:-1] + m[1:]) / 2
    k = torch.nonzero(mids.float().double() == mids).reshape(-1)
    k = k[(k != q8.ZERO_CODE[signed]) & (k != q8.ZERO_CODE[signed] - 1)] if signed else k[k != 0]
    assert len(k) > 20, "the maps have midpoints that are fp32 values"
    codes = q8.encode_with(mids[k].float(), torch.ones(q8.n_blocks(len(k))), signed)
    assert codes.long().tolist() == k.tolist()


def test_zero_and_sign_rules():
    ones = torch.ones(1)
    # exp_avg: the zero code only for +-0; the smallest values keep their sign
    xs = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1e-30, -1e-30, 1.0])
    assert q8.encode_with(xs, ones, True).tolist() == [127, 127, 128, 126, 128, 126, 255]
    # exp_avg_sq: decodes to 0 only when 0; any positive value at least the smallest positive code
    xs = torch.tensor([0.0, 1e-45, 1e-30, 1.0])
    codes = q8.encode_with(xs, ones, False)
    assert codes.tolist() == [0, 1, 1, 255]
    assert (q8.decode(codes, ones, False)[1:] > 0).all()


TINY = 2.0 ** -149  # the smallest positive fp32 value


def test_a_positive_square_never_decodes_to_zero_at_any_scale():
    """The quotient x / scale underflows to 0 (a tiny value beside a large one, up to 3.4e38),
    and at a subnormal scale the smallest codes decode to 0: a positive square still takes
    a code that decodes above 0, the lowest such; 0 stays code 0."""
    blocks = [
        [10.0, TINY, 1e-44, 0.0],                  # x / scale underflows: 1.4e-45 / 10
        [3.4028234663852886e38, TINY, 1e-38, 1.0, 0.0],  # the largest scale
        [2.0 ** -140, TINY, 2.0 ** -141, 0.0],     # a subnormal scale: map[1] * scale is 0
        [TINY, TINY, 0.0],                         # the smallest scale
        [2.0 ** -126, TINY, 0.0],                  # the smallest normal scale
    ]
    x = torch.zeros(len(blocks) * q8.BLOCK)
    for b, vals in enumerate(blocks):
        x[b * q8.BLOCK:b * q8.BLOCK + len(vals)] = torch.tensor(vals, dtype=torch.float64).float()
    codes, scales = q8.encode(x, False)
    y = q8.decode(codes, scales, False)
    assert bool((y[x > 0] > 0).all()), "every positive value decodes above 0"
    assert bool((y[x == 0] == 0).all()) and bool((codes[x == 0] == 0).all())
    lowest = q8.lowest_positive_code(scales)
    assert lowest.tolist()[:2] == [1, 1] and lowest[4].item() == 1, "a normal scale: code 1"
    assert lowest[2].item() > 1 and lowest[3].item() > lowest[2].item(), "a subnormal scale: more"
    for b in range(len(blocks)):  # the lowest positive code is the first that decodes above 0
        k = lowest[b].item()
        s = scales[b:b + 1]
        assert q8.decode(torch.tensor([k], dtype=torch.uint8), s, False).item() > 0
        assert q8.decode(torch.tensor([k - 1], dtype=torch.uint8), s, False).item() == 0
    assert codes[1].item() == 1 and codes[q8.BLOCK + 1].item() == 1, "underflowed quotients: code 1"
    assert codes[3 * q8.BLOCK].item() == 255 and codes[3 * q8.BLOCK + 1].item() == 255  # x == scale


def test_the_lowest_positive_code_at_zero_inf_and_nan_scales():
    s = torch.tensor([0.0, float("inf"), float("nan"), 1.0, TINY, 2.0 ** -130])
    want = [255, 0, 0, 1]  # inf and NaN: map * scale is never 0, so nothing is raised
    got = q8.lowest_positive_code(s).tolist()
    assert got[:4] == want
    # by brute force at the subnormal scales: the first code whose product is not 0
    for i in (4, 5):
        prods = (q8.qmap(False).double() * s[i].double()).float()
        assert got[i] == int(torch.nonzero(prods != 0)[0])


def test_nan_and_inf_blocks_keep_their_codes_under_the_zero_rule():
    """An inf or NaN scale gets lowest code 0: the positive squares keep their code, and the
    block decodes to non-finite values as before."""
    x = torch.zeros(2 * q8.BLOCK)
    x[:3] = torch.tensor([float("inf"), 1.0, TINY])
    x[q8.BLOCK:q8.BLOCK + 3] = torch.tensor([float("nan"), 1.0, TINY])
    codes, scales = q8.encode(x, False)
    assert codes[:3].tolist() == [0, 0, 0] and codes[q8.BLOCK:q8.BLOCK + 3].tolist() == [0, 0, 0]
    assert not q8.decode(codes, scales, False)[:3].isfinite().any()


def test_zero_rule_ties_m_to_v():
    m = torch.tensor([0, 126, 128, 255, 127, 3], dtype=torch.uint8)
    v = torch.tensor([0, 0, 0, 1, 0, 255], dtype=torch.uint8)
    assert q8.zero_rule(m, v).tolist() == [127, 127, 127, 255, 127, 3]


def test_all_zero_blocks_and_nan_blocks():
    x = torch.zeros(600)
    x[300] = float("nan")
    x[520] = 2.0
    codes, scales = q8.encode(x, True)
    assert scales[0].item() == 0.0 and math.isnan(scales[1].item()) and scales[2].item() == 2.0
    assert (codes[:256] == 127).all()
    y = q8.decode(codes, scales, True)
    assert differing(y[:256], torch.zeros(256)) == 0  # +0.0, not -0.0
    assert y[256:512].isnan().all(), "a NaN in a block makes its scale NaN: the block decodes to NaN"
    assert y[520].item() == 2.0


def test_blocks_are_256_elements_the_last_partial():
    x = torch.arange(1, 601, dtype=torch.float32)
    assert q8.block_absmax(x).tolist() == [256.0, 512.0, 600.0]
    assert q8.n_blocks(0) == 0 and q8.n_blocks(256) == 1 and q8.n_blocks(257) == 2
    x2 = x.reshape(20, 30)  # blocks run over the flattened tensor, across rows
    assert q8.block_absmax(x2).tolist() == [256.0, 512.0, 600.0]


@pytest.mark.parametrize("signed", [True, False])
def test_decode_is_one_rounded_multiply_and_map_values_round_trip(signed):
    gen = torch.Generator().manual_seed(5)
    codes = torch.randint(0, 256, (1000,), generator=gen).to(torch.uint8)
    scales = torch.rand(q8.n_blocks(1000), generator=gen) * 1e-3
    y = q8.decode(codes, scales, signed)
    want = (q8.qmap(signed).double()[codes.long()] * scales.double().repeat_interleave(256)[:1000]).float()
    assert differing(y, want) == 0
    # at a power-of-two scale a map value is decoded exactly, so it encodes to its own code
    all_codes = torch.arange(256).to(torch.uint8)
    s = torch.tensor([2.0 ** -20])
    again = q8.encode_with(q8.decode(all_codes, s, signed), s, signed)
    assert torch.equal(again, all_codes)


def test_state_keys_choose_their_map():
    assert q8.signed_for("exp_avg") and not q8.signed_for("exp_avg_sq") and not q8.signed_for("max_exp_avg_sq")
    with pytest.raises(KeyError, match="master_param"):
        q8.signed_for("master_param")
