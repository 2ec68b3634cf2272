"""The remainder format alone (formats/bf16_remainder.py), against its definition computed
another way: every bf16 high half with the low halves where rounding decides, and random words."""
import numpy as np
import pytest
import torch

from adamw_tau.formats import bf16_remainder

EDGE_LOWS = (0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF)


def _words() -> np.ndarray:
    """uint32 words: every high half x EDGE_LOWS, and 2^20 random words."""
    highs = np.arange(1 << 16, dtype=np.uint64) << np.uint64(16)
    edges = (highs[:, None] | np.array(EDGE_LOWS, dtype=np.uint64)[None, :]).reshape(-1)
    rand = np.random.default_rng(0).integers(0, 1 << 32, size=1 << 20, dtype=np.uint64)
    return np.concatenate([edges, rand]).astype(np.uint32)


def _fp32(words: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(words.view(np.int32).copy()).view(torch.float32)


def _nearest_ties_away(x: np.ndarray) -> np.ndarray:
    """The bf16 nearest to fp32 ``x`` by value (float64 distances), ties to the larger magnitude;
    past the largest bf16, inf. Returns bf16 bit patterns (uint16). Finite, non-NaN ``x`` only."""
    u = x.view(np.uint32)
    sign = u & 0x80000000
    mag = u & 0x7FFFFFFF
    down = (mag >> 16).astype(np.uint64)  # truncation toward zero, then one step up
    up = down + 1
    lo = (down << np.uint64(16)).astype(np.uint32).view(np.float32).astype(np.float64)
    hi_f = np.where(up >= 0x7F80, np.inf, (up << np.uint64(16)).astype(np.uint32).view(np.float32).astype(np.float64))
    a = mag.view(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore"):
        take_up = (hi_f - a) <= (a - lo)  # equal distances: away from zero
    # the halfway point past the largest bf16 rounds to inf, as IEEE rounding does
    take_up |= (down == 0x7F7F) & (mag >= 0x7F7F8000)
    return (np.where(take_up, up, down).astype(np.uint32) | (sign >> 16)).astype(np.uint16)


def test_merge_undoes_split_on_every_non_nan_word():
    w = _words()
    x = _fp32(w)
    keep = ~torch.isnan(x)
    param, rem = bf16_remainder.split(x)
    back = bf16_remainder.merge(param, rem)
    assert torch.equal(back[keep].view(torch.int32), x[keep].view(torch.int32))
    assert param.dtype == torch.bfloat16 and rem.dtype == torch.int16
    assert (rem < 0).any() and (rem > 0).any()  # both signs exercised


def test_param_is_the_nearest_bf16_with_ties_away_from_zero():
    w = _words()
    x = _fp32(w)
    finite = torch.isfinite(x).numpy()
    param = bf16_remainder.split(x)[0].view(torch.int16).numpy().view(np.uint16)
    want = _nearest_ties_away(x.numpy()[finite])
    assert np.array_equal(param[finite], want)
    # it differs from torch's to-nearest-even only at ties whose high half is even
    rne = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    differ = finite & (param != rne)
    assert differ.any()
    assert np.all((w[differ] & 0xFFFF) == 0x8000) and np.all((w[differ] >> 16) % 2 == 0)


def test_infinities_and_zeros_split_to_themselves():
    x = torch.tensor([float("inf"), -float("inf"), 0.0, -0.0])
    param, rem = bf16_remainder.split(x)
    assert torch.equal(param.view(torch.int16), torch.tensor([0x7F80, -0x80, 0, -0x8000], dtype=torch.int16))
    assert torch.equal(rem, torch.zeros(4, dtype=torch.int16))


@pytest.mark.parametrize("word", [0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0xFF800001, 0x7FC00000, 0xFFC00000,
                                  0x7F808000, 0x7FBFFFFF])
def test_every_nan_master_splits_to_a_nan_param(word):
    """TE's split turns 0x7FFFFFFF (CUDA's NaN) into -0.0 and 0x7F800001 into +inf; ours
    canonicalises first: param 0x7FC0, remainder 0, and merging gives 0x7FC00000."""
    x = _fp32(np.array([word], dtype=np.uint32))
    param, rem = bf16_remainder.split(x)
    assert param.view(torch.int16).item() == 0x7FC0 and rem.item() == 0
    assert bf16_remainder.merge(param, rem).view(torch.int32).item() == bf16_remainder.CANONICAL_NAN


def test_from_param_starts_the_master_at_the_param():
    p = _fp32(_words()[: 1 << 16] & np.uint32(0xFFFF0000)).to(torch.bfloat16)
    rem = bf16_remainder.from_param(p)
    finite = ~torch.isnan(p)
    assert torch.equal(rem[finite], torch.zeros_like(rem[finite]))
    merged = bf16_remainder.merge(p, rem)
    assert torch.equal(merged[finite].view(torch.int32), p[finite].float().view(torch.int32))
    assert torch.isnan(merged[~finite]).all()


def test_bad_dtypes_are_refused():
    with pytest.raises(TypeError, match="fp32 master"):
        bf16_remainder.split(torch.zeros(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="int16 remainder"):
        bf16_remainder.merge(torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="shape"):
        bf16_remainder.merge(torch.zeros(2, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.int16))
