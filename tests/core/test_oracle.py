"""The NumPy oracle and the contract module on known answers, and the host scalars against
the oracle's.

The literals below were computed once from docs/numerics.md by a separate C program (uint32
arithmetic for the hash; C doubles, pow, sqrt and one (float) cast for the scalars), not by
this package: a change to a hash constant, a shift, the key's order or a host-scalar formula
changes them.
"""
import random
import struct

import numpy as np
import pytest
import torch

import numpy_oracle as oracle
from adamw_tau.core import contract

MIX32 = {0x00000000: 0x00000000, 0x00000001: 0x688990C0, 0x00000002: 0xD1132181, 0xFFFFFFFF: 0x6768824A,
         0x80000000: 0xCC4B4124, 0x12345678: 0xF5E71C96, 0xDEADBEEF: 0xE628C683, 1234: 0x400C726E}
# (seed, step, param_id): key
SR_KEY = {(0, 1, 0): 0x24009C6D, (1234, 1, 7): 0x4B65A7EC, (1234, 3, 9): 0x2716ECD7,
          (2 ** 40 + 17, 12, 5): 0xDBD1907A, (2 ** 64 - 1, 2 ** 32 - 1, 123456): 0x42EBA0C2, (99, 8, 3): 0xF5D5A67B}
# element index: bits, under key 0x2716ECD7 (= SR_KEY[(1234, 3, 9)]); indices past 2^32 use hi32(i)
SR_BITS = {0: 0x3B37229E, 1: 0x1C6F1F62, 2: 0x26FFE78B, 4095: 0x8B5DBA3C, 4096: 0x4CBFCF48,
           2 ** 31 + 3: 0x7E76F799, 2 ** 32: 0x213484D1, 2 ** 32 + 5: 0xFF6818EE, 2 ** 33 + 1: 0x6C50AD9D}
KEY = 0x2716ECD7
# hyperparameters: the nine words (step_size, bc2_sqrt, decay, beta1, 1 - beta1, beta2, 1 - beta2, eps, step)
HOST_SCALARS = [
    (dict(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="tau", tau_iters=100.0),
     [0x3C23D70A, 0x3D0186E2, 0x3F7D70A4, 0x3F666666, 0x3DCCCCCD, 0x3F7FBE77, 0x3A83126F, 0x322BCC77, 1]),
    (dict(lr=3e-4, lr_peak=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, step=10, decay_mode="lambda", weight_decay=0.1),
     [0x39F17CF4, 0x3F2229FF, 0x3F7FFE09, 0x3F666666, 0x3DCCCCCD, 0x3F733333, 0x3D4CCCCD, 0x322BCC77, 10]),
    (dict(lr=2e-3, lr_peak=5e-3, beta1=0.0, beta2=0.0, eps=0.0, step=3, decay_mode="none"),
     [0x3B03126F, 0x3F800000, 0x3F800000, 0x00000000, 0x3F800000, 0x00000000, 0x3F800000, 0x00000000, 3]),
    (dict(lr=1e-2, lr_peak=1e-2, beta1=0.5, beta2=0.999, eps=1e-30, step=1000, decay_mode="tau", tau_iters=77.7),
     [0x3C23D70A, 0x3F4B90A4, 0x3F7CB48D, 0x3F000000, 0x3F000000, 0x3F7FBE77, 0x3A83126F, 0x0DA24260, 1000]),
    (dict(lr=1.37e-3, lr_peak=5e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=37000, decay_mode="lambda",
          weight_decay=0.1),
     [0x3AB39192, 0x3F800000, 0x3F7FF706, 0x3F666666, 0x3DCCCCCD, 0x3F7FBE77, 0x3A83126F, 0x322BCC77, 37000]),
]


def _oracle_scalars(kw: dict) -> oracle.Scalars:
    return oracle.host_scalars(lr=kw["lr"], lr_peak=kw["lr_peak"], beta1=kw["beta1"], beta2=kw["beta2"],
                               eps=kw["eps"], t=kw["step"], decay=kw["decay_mode"], tau_iter=kw.get("tau_iters"),
                               weight_decay=kw.get("weight_decay"))


def _contract_words(kw: dict) -> list[int]:
    return contract.host_scalars(**kw).as_tensor().view(torch.int32).numpy().view(np.uint32).tolist()


@pytest.mark.parametrize("impl", ["oracle", "contract"])
def test_mix32_and_key_known_answers(impl):
    mod = oracle if impl == "oracle" else contract
    assert {x: mod.mix32(x) for x in MIX32} == MIX32
    assert {k: mod.sr_key(*k) for k in SR_KEY} == SR_KEY


def test_sr_bits_known_answers():
    idx = list(SR_BITS)
    assert oracle.sr_bits(KEY, np.array(idx, dtype=np.uint64)).tolist() == list(SR_BITS.values())
    assert contract.sr_bits(KEY, torch.tensor(idx, dtype=torch.int64)).tolist() == list(SR_BITS.values())
    assert oracle.mix32_np(np.array(list(MIX32), dtype=np.uint64)).tolist() == list(MIX32.values())


@pytest.mark.parametrize("case", range(len(HOST_SCALARS)))
def test_host_scalars_known_answers(case):
    kw, want = HOST_SCALARS[case]
    assert oracle.words(_oracle_scalars(kw)) == want
    assert _contract_words(kw) == want


def test_host_scalars_equal_the_oracles_on_random_hyperparameters():
    """contract.host_scalars against the oracle's own formulas, word for word: betas of 0 and
    near 1, steps from 1 to past the bias corrections' end, every decay form."""
    rng = random.Random(0)
    for _ in range(3000):
        mode = rng.choice(["tau", "lambda", "none"])
        lr_peak = 10 ** rng.uniform(-5, -1)
        lr = lr_peak * rng.choice([1.0, rng.random()])
        kw = dict(lr=lr, lr_peak=lr_peak, beta1=rng.choice([0.0, 0.5, 0.9, rng.random()]),
                  beta2=rng.choice([0.0, 0.95, 0.999, 0.9999, rng.random()]), eps=rng.choice([0.0, 1e-8, 1e-30]),
                  step=rng.choice([1, 2, 3, rng.randint(1, 100), rng.randint(1, 100_000)]), decay_mode=mode)
        if mode == "tau":
            kw["tau_iters"] = 10 ** rng.uniform(0.5, 5)
        elif mode == "lambda":
            kw["weight_decay"] = rng.uniform(0, 0.99 / lr)
        assert _contract_words(kw) == oracle.words(_oracle_scalars(kw)), kw


def test_oracle_rounds_like_the_document_says():
    """The oracle's own conversions, on hand-made words: ties to even, NaN kept, overflow to inf."""
    f = lambda w: np.array([w], dtype=np.uint32).view(np.float32)  # noqa: E731
    bits = lambda x: int(np.asarray(x, dtype=np.float32).view(np.uint32)[0])  # noqa: E731
    assert bits(oracle.to_dtype(f(0x3F808000), "bfloat16")) == 0x3F800000  # tie, even below
    assert bits(oracle.to_dtype(f(0x3F818000), "bfloat16")) == 0x3F820000  # tie, even above
    assert bits(oracle.to_dtype(f(0x3F801000), "float16")) == 0x3F800000
    assert bits(oracle.to_dtype(f(0x3F803000), "float16")) == 0x3F804000
    assert bits(oracle.to_dtype(f(0x477FF000), "float16")) == 0x7F800000  # 65520 -> inf
    assert np.isnan(oracle.to_dtype(f(0x7FFFFFFF), "bfloat16")[0])
    # stochastic: bf16 adds the low 16 random bits; fp16 below 2^-24 goes to 0 or 2^-24
    assert bits(oracle.stochastic_round(f(0x3F800001), np.array([0xFFFF]), "bfloat16")) == 0x3F810000
    assert bits(oracle.stochastic_round(f(0x3F800001), np.array([0xFFFE]), "bfloat16")) == 0x3F800000
    tiny = np.array([2.0 ** -26], dtype=np.float32)  # a quarter of 2^-24: up when the 24 bits < 2^22
    assert oracle.stochastic_round(tiny, np.array([2 ** 22 - 1]), "float16")[0] == 2.0 ** -24
    assert oracle.stochastic_round(tiny, np.array([2 ** 22]), "float16")[0] == 0.0
    assert struct.pack("<f", oracle.stochastic_round(-tiny, np.array([0]), "float16")[0]) == struct.pack("<f", -2.0 ** -24)
