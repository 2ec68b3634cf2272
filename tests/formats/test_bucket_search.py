"""The CPU op's threshold search is the formats' rule: csrc/adamw_quant_cpu.h's encode_block
(the bucket search of csrc/bucket_search.h, [note: bucket search]) gives the code each codec's
per-element encode gives (the binary search the CUDA kernel runs), for every fp32 bit pattern
of x̂ (the full tier: all 2^32, for each table, in the AVX2 build and the scalar one), and in
the fast tier for a strided sample plus every pattern within 2^12 ulps of each threshold, of
±0, ±inf and the NaN boundaries; at other scales and zero-rule floors on a sample."""
import struct

import pytest
from tiers import tiered
import torch

from adamw_tau.formats import q4_blockwise, q8_blockwise
from adamw_tau.testing import encode_check

TABLES = [(8, True), (8, False), (4, True), (4, False)]
VARIANTS = list(encode_check.VARIANTS)
NEAR = 1 << 12  # patterns either side of each boundary


@pytest.fixture(scope="module", params=VARIANTS)
def check(request, tmp_path_factory):
    lib = encode_check.build(tmp_path_factory.mktemp(f"encode_check_{request.param}"), request.param)
    return request.param, encode_check.EncodeCheck(lib)


def _thresholds(bits: int, signed: bool) -> list[int]:
    t = (q8_blockwise if bits == 8 else q4_blockwise).thresholds(signed)
    return [w & 0xFFFFFFFF for w in t.contiguous().view(torch.int32).tolist()]


def _boundaries(bits: int, signed: bool) -> list[int]:
    specials = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7F800001, 0xFF800001, 0x00000001, 0x80000001,
                0x3F800000, 0xBF800000]
    return sorted(set(_thresholds(bits, signed) + specials))


def test_the_native_build_runs_the_vector_lanes_and_the_other_does_not(check):
    variant, c = check
    if variant == "scalar":
        assert not c.vectorised
    else:
        with open("/proc/cpuinfo") as f:
            has_avx2 = " avx2" in f.read()
        assert c.vectorised == has_avx2


@pytest.mark.parametrize("bits,signed", TABLES)
def test_near_every_threshold_and_special_value(check, bits, signed):
    _, c = check
    for b in _boundaries(bits, signed):
        n, bad = c.mismatches(bits, signed, (b - NEAR) & 0xFFFFFFFF, 2 * NEAR + 1)
        assert n == 0, f"{n} codes differ near {b:#010x}, first at x̂ bits {bad:#010x}"


@pytest.mark.parametrize("bits,signed", TABLES)
def test_a_strided_sample_of_all_patterns(check, bits, signed):
    _, c = check
    stride = 4093  # prime: the sample's low bits run through every residue
    n, bad = c.mismatches(bits, signed, 0, (1 << 32) // stride + 1, stride)
    assert n == 0, f"{n} codes differ, first at x̂ bits {bad:#010x}"


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


@pytest.mark.parametrize("bits,signed", TABLES)
@pytest.mark.parametrize("scale,lowest", [(0.0, 0), (_f32(3e-3), 1), (1e-40, 9), (float("inf"), 0),
                                          (float("nan"), 0), (_f32(0.7), 3)])
def test_other_scales_and_floors(check, bits, signed, scale, lowest):
    _, c = check
    lowest = lowest if not signed else 0
    n, bad = c.mismatches(bits, signed, 12345, (1 << 32) // 65521 + 1, 65521, scale=scale, lowest=lowest)
    assert n == 0, f"{n} codes differ at scale {scale}, lowest {lowest}, first at x bits {bad:#010x}"


@pytest.mark.parametrize("bits,signed", tiered(TABLES, fast=[]))
def test_every_fp32_pattern(check, bits, signed):
    _, c = check
    n, bad = c.mismatches(bits, signed, 0, 1 << 32)
    assert n == 0, f"{n} codes differ, first at x̂ bits {bad:#010x}"
