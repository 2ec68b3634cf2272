"""The CPU op's block phases are the formats' rules, in every instruction set this machine runs
(encode_check.VARIANTS: AVX-512 VBMI, AVX-512, AVX2, scalar; each a build of its own; the fast
tier builds the widest and the scalar one, the full tier all):
- encode_block (the threshold searches: csrc/octave_search.h with VBMI, csrc/permute_search.h
  for 4-bit with AVX-512, csrc/bucket_search.h otherwise) gives the code each codec's
  per-element encode gives (the binary search the CUDA kernel runs), for every fp32 bit pattern
  of x̂ (the full tier: all 2^32, for each table and build), and in the fast tier for a strided
  sample plus every pattern within 2^12 ulps of each threshold, of ±0, ±inf and the NaN
  boundaries; at other scales and zero-rule floors on a sample;
- decode_block gives the codec's decode bits for every code, at normal, subnormal, zero, inf
  and NaN scales, at block lengths that end in each lane width's tail;
- the 4-bit nibble unpack and pack and both zero rules give the per-element results;
- the CUDA kernel's encode (the octave search over its staged tables, q8_blockwise.h: [note:
  the kernel's search]) gives the binary search's code: near every threshold, on a sample, at
  other scales, and (full tier) for all 2^32 patterns; in the scalar build only (it is scalar
  code the kernel runs one value a lane)."""
import struct

import pytest
from tiers import tiered
import torch

from adamw_tau.formats import q4_blockwise, q8_blockwise
from adamw_tau.testing import encode_check

TABLES = [(8, True), (8, False), (4, True), (4, False)]
VARIANTS = list(encode_check.VARIANTS)
NEAR = 1 << 12  # patterns either side of each boundary


# the fast tier builds the widest variant the machine runs (the op's own paths: -march=native
# picks them) and the scalar one; the full tier (CI runs it) every variant between
FAST_VARIANTS = [VARIANTS[0], "scalar"]


@pytest.fixture(scope="module", params=tiered([(v,) for v in VARIANTS], fast=[(v,) for v in FAST_VARIANTS]))
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


def test_each_build_runs_the_lanes_it_was_built_for(check):
    variant, c = check
    assert c.lanes == encode_check.VARIANTS[variant][1]


def test_the_machine_has_the_variants_its_flags_say():
    # the variants come from /proc/cpuinfo: a machine with AVX2 must check the AVX2 build
    flags = encode_check.cpu_flags()
    assert "scalar" in VARIANTS
    assert ("avx2" in VARIANTS) == set(encode_check.ALL_VARIANTS["avx2"][1]).issubset(flags)
    assert ("vbmi" in VARIANTS) == set(encode_check.ALL_VARIANTS["vbmi"][1]).issubset(flags)


SCALES = [1.0, 0.0, 3e-3, 1e-40, 1e-45, float("inf"), float("nan"), 0.7, 3.4e38, -0.5]


@pytest.mark.parametrize("bits,signed", TABLES)
@pytest.mark.parametrize("n", [256, 255, 200, 64, 63, 17, 16, 9, 8, 1, 0])
def test_decode_gives_the_codec_bits_for_every_code(check, bits, signed, n):
    _, c = check
    for scale in SCALES:
        got, bad = c.decode_mismatches(bits, signed, scale, n)
        assert got == 0, f"{got} of {n} codes decode to other bits at scale {scale}, first code {bad}"


@pytest.mark.parametrize("first,n", [(0, 128), (128, 128), (0, 127), (2, 64), (0, 63), (4, 1), (0, 0), (256, 129)])
def test_nibbles_and_the_zero_rule(check, first, n):
    _, c = check
    g = torch.Generator().manual_seed(first * 1000 + n)
    packed = bytes(torch.randint(0, 256, (300,), generator=g, dtype=torch.uint8).tolist())
    for v_scale in (1.0, 1e-40, 1e-45, 0.0, float("nan")):
        assert c.block_phase_mismatches(packed, first, n, v_scale) == 0, (first, n, v_scale)


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


@pytest.fixture(scope="module")
def scalar_check(tmp_path_factory):
    return encode_check.EncodeCheck(encode_check.build(tmp_path_factory.mktemp("encode_check_kernel"), "scalar"))


@pytest.mark.parametrize("bits,signed", TABLES)
def test_the_kernels_search_near_every_threshold_and_on_a_sample(scalar_check, bits, signed):
    for b in _boundaries(bits, signed):
        n, bad = scalar_check.mismatches(bits, signed, (b - NEAR) & 0xFFFFFFFF, 2 * NEAR + 1, kernel=True)
        assert n == 0, f"{n} kernel codes differ near {b:#010x}, first at x̂ bits {bad:#010x}"
    n, bad = scalar_check.mismatches(bits, signed, 0, (1 << 32) // 4093 + 1, 4093, kernel=True)
    assert n == 0, f"{n} kernel codes differ, first at x̂ bits {bad:#010x}"
    for scale, lowest in [(0.0, 0), (_f32(3e-3), 1), (1e-40, 9), (float("inf"), 0), (float("nan"), 0)]:
        lowest = lowest if not signed else 0
        n, bad = scalar_check.mismatches(bits, signed, 12345, (1 << 32) // 65521 + 1, 65521, scale=scale,
                                         lowest=lowest, kernel=True)
        assert n == 0, f"{n} kernel codes differ at scale {scale}, first at x bits {bad:#010x}"


@pytest.mark.parametrize("bits,signed", tiered(TABLES, fast=[]))
def test_the_kernels_search_over_every_fp32_pattern(scalar_check, bits, signed):
    n, bad = scalar_check.mismatches(bits, signed, 0, 1 << 32, kernel=True)
    assert n == 0, f"{n} kernel codes differ, first at x̂ bits {bad:#010x}"
