"""The reference against an independent NumPy evaluation of the contract, bit for bit, on hard data."""
import numpy as np
import pytest
import torch
from tiers import tiered

import numpy_oracle as oracle
from adamw_tau.core import reference
from adamw_tau.core.contract import host_scalars, sr_bits, sr_key
from adamw_tau.testing.bits import differing_lists
from adamw_tau.testing.cases import FLAG_SETS
from adamw_tau.testing.hard_data import SPECIAL_KINDS, hard_values, q8_blocks
from adamw_tau.formats import q8_blockwise, registry
from adamw_tau.testing.parity import PATHS, SCALE_KEYS, grad_span, make_bucket, scale_lists

DT = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
KEYS = ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "masters")
MOMENT = {"exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq", "max_exp_avg_sqs": "max_exp_avg_sq"}
PLAIN_PATHS = [p for p in PATHS if not PATHS[p].quantized]
Q8_PATHS = [p for p in PATHS if PATHS[p].quantized]


def _bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def _differing(got: np.ndarray, want: np.ndarray) -> int:
    nan = np.isnan(got) & np.isnan(want)
    return int((_bits(got) != _bits(want))[~nan].sum())


@pytest.mark.parametrize("path", PLAIN_PATHS)
@pytest.mark.parametrize("case", list(FLAG_SETS))
def test_reference_matches_numpy_oracle(path, case):
    """Every path under every flag set of the backends' parity cases (NaN, inf, values to 3e38,
    subnormals, ties in the data; GradScaler scales 3.0 and 0.7; betas and eps of 0; a skipped
    step). The reference gets contract.host_scalars, the oracle computes its own."""
    flags = FLAG_SETS[case]
    pth = PATHS[path]
    amsgrad, maximize, decay, scale = flags["amsgrad"], flags["maximize"], flags["decay"], flags["grad_scale"]
    (beta1, beta2), eps, skip = flags["betas"], flags["eps"], flags.get("skip_step")
    sizes = [1, 3, 1023, 2049]
    ids = [3 + i for i in range(len(sizes))]
    b = make_bucket(sizes, pth, amsgrad=amsgrad, seed=11)
    gen = torch.Generator().manual_seed(5)
    st = {k: [t.float().numpy().copy() for t in v] for k, v in b.items()}
    scale_t = None if scale is None else torch.tensor([scale])
    extra = 12.0 if pth.param_dtype != torch.float16 else 0.0
    for t in range(1, 5):
        grads = [hard_values(n, gen, span=grad_span(pth) + extra, dtype=pth.param_dtype).to(pth.param_dtype)
                 for n in sizes]
        found_inf = None if skip is None else torch.tensor([float(t == skip)])
        kw = dict(lr=2e-3 * t, lr_peak=1e-2, beta1=beta1, beta2=beta2, eps=eps)
        hs = host_scalars(**kw, step=t, decay_mode=decay, tau_iters=50.0, weight_decay=0.3)
        reference.adamw_step_(b["params"], grads, b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"],
                              b["masters"], hs.as_tensor(), ids, 99, amsgrad, maximize, pth.stochastic_rounding,
                              scale_t, found_inf)
        s = oracle.host_scalars(**kw, t=t, decay=decay, tau_iter=50.0, weight_decay=0.3)
        for i in range(len(sizes)):
            out = oracle.adamw_step(st["params"][i], grads[i].float().numpy(), st["exp_avgs"][i],
                                    st["exp_avg_sqs"][i], st["max_exp_avg_sqs"][i] if amsgrad else None,
                                    st["masters"][i] if pth.master else None, s, maximize=maximize,
                                    param_dtype=DT[pth.param_dtype], state_dtype=DT[pth.state_dtype],
                                    stochastic_rounding=pth.stochastic_rounding, seed=99, param_id=ids[i],
                                    grad_scale=scale, found_inf=t == skip, remainder=pth.master == "remainder")
            for key, val in zip(KEYS, out):
                if val is None:
                    continue
                st[key][i] = val
                diff = _differing(b[key][i].float().numpy(), val)
                assert diff == 0, f"{key}[{i}] step {t}: {diff} words differ"


def test_data_covers_every_special_kind():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = hard_values(100_000, gen, span=6.0, dtype=dtype)
        ax = x.abs()
        w = x.view(torch.int32)
        tiny = torch.finfo(torch.float32).tiny
        assert (w == 0).any() and (w == torch.tensor(-0.0).view(torch.int32)).any()
        assert ((ax > 0) & (ax < tiny)).any() and torch.isnan(x).any()
        assert (x == float("inf")).any() and (x == -float("inf")).any()
        big = torch.finfo(dtype).max
        assert (ax == big).any() and ((ax > big / 1e3) & (ax < big)).any() and (x < 0).any()
        dtiny = torch.finfo(dtype).tiny
        assert ((ax > 0) & (ax < dtiny) & (ax >= torch.finfo(dtype).smallest_normal * 2.0 ** -10)).any()
        assert (ax == dtiny).any()
        low = {torch.float16: 0x1FFF, torch.bfloat16: 0xFFFF}
        for d, mask in low.items():
            if dtype in (torch.float32, d):  # exact halfway words of bf16 / fp16
                assert ((w & mask) == (mask + 1) // 2).sum() > 100
    assert len(SPECIAL_KINDS) == 10
    x = hard_values(100_000, gen, span=6.0)
    assert (x.abs() > 1e38).any() and ((x.abs() > 1e5) & (x.abs() < 1e7)).any()


def test_reference_sqrt_is_correctly_rounded():
    """The reason the reference does not trust torch's fp32 ops, through the reference itself:
    scalars chosen so that each param becomes 1 / sqrt(x) (amsgrad's max reads x, beta1 = 1
    keeps m = 1), against NumPy's float64 sqrt rounded once. torch's fp32 sqrt on this CPU
    is not correctly rounded on these words, and the quotient shows it."""
    x = hard_values(1 << 18, torch.Generator().manual_seed(1), positive=True, span=30.0)
    x = x[torch.isfinite(x) & (x > 0)]
    n = x.numel()
    one = torch.ones(n)
    p, g, m, v, vmax = torch.zeros(n), torch.zeros(n), one.clone(), torch.zeros(n), x.clone()
    # step_size -1, bc2_sqrt 1, decay 1, beta1 1, 1 - beta1 0, beta2 0, 1 - beta2 1, eps 0, step 1
    s = torch.tensor([-1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    s[8:].view(torch.int32)[0] = 1
    reference.adamw_step_([p], [g], [m], [v], [vmax], [], s, [0], 0, True, False, False, None, None)
    sq = np.sqrt(x.double().numpy()).astype(np.float32).astype(np.float64)
    want = (1.0 / sq).astype(np.float32)
    assert _differing(p.numpy(), want) == 0
    torch_sqrt = torch.sqrt(x).double().numpy()
    assert (torch_sqrt != sq).sum() > 0, "torch's fp32 sqrt is correctly rounded here: the test shows nothing"
    assert ((1.0 / torch_sqrt).astype(np.float32) != want).sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_round_matches_oracle_and_is_unbiased(dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.cat([hard_values(4000, gen, span=6.0), torch.tensor([float("inf"), -float("inf"), 3e-9, -7e-8])])
    bits = sr_bits(sr_key(1, 2, 3), torch.arange(x.numel()))
    got = reference.stochastic_round(x, bits, dtype).float().numpy()
    want = oracle.stochastic_round(x.numpy(), bits.numpy().astype(np.uint64), DT[dtype])
    assert _differing(got, want) == 0
    # unbiased: 1 + a quarter ulp rounds up a quarter of the time
    ulp = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10
    y = torch.full((200_000,), 1.0 + ulp / 4)
    b = sr_bits(sr_key(0, 1, 0), torch.arange(y.numel()))
    up = (reference.stochastic_round(y, b, dtype).float() > 1.0).double().mean().item()
    assert abs(up - 0.25) < 0.01
    # below the smallest fp16 subnormal: rounds to it with probability |x| / 2^-24
    if dtype == torch.float16:
        z = torch.full((200_000,), 2.0 ** -26)
        frac = (reference.stochastic_round(z, b, dtype).float() > 0).double().mean().item()
        assert abs(frac - 0.25) < 0.01


def test_found_inf_leaves_everything_bit_identical():
    b = make_bucket([5, 17], PATHS["bf16_master"], amsgrad=True, seed=2)
    before = {k: [t.clone() for t in v] for k, v in b.items()}
    grads = [torch.randn(5).bfloat16(), torch.randn(17).bfloat16()]
    s = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="none")
    reference.adamw_step_(b["params"], grads, b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], b["masters"],
                          s.as_tensor(), [0, 1], 0, True, False, False, torch.tensor([2.0]), torch.tensor([1.0]))
    for k in b:
        assert differing_lists(b[k], before[k]) == 0, k


# 8-bit: every row in the fast tier, as before; every other quantized format three rows (every
# flag set in the full tier)
_QUANT_CASES = [(p, c) for c in FLAG_SETS for p in Q8_PATHS]
_FAST_QUANT = [(p, c) for p, c in _QUANT_CASES if PATHS[p].format.name == "q8"] + \
    [(f"{where}_{f.option}", case) for f in registry.QUANTIZED if f.name != "q8"
     for where, case in (("fp32", "plain"), ("bf16_remainder", "amsgrad_skip_beta2_0"), ("bf16_sr", "betas_0_scale0.7"))]


@pytest.mark.parametrize("path,case", tiered(_QUANT_CASES, _FAST_QUANT))
def test_quantized_reference_is_decode_then_the_oracles_fp32_step_then_encode(path, case):
    """The quantized formats' contract (8-bit, 4-bit): the states decoded (map[code] * scale), the fp32 step of the NumPy
    oracle on them, its new fp32 moments encoded (q8_blockwise: block max, x / max, thresholds).
    The param update uses the fresh fp32 moments, never their codes."""
    flags = FLAG_SETS[case]
    pth = PATHS[path]
    amsgrad, maximize, decay, scale = flags["amsgrad"], flags["maximize"], flags["decay"], flags["grad_scale"]
    (beta1, beta2), eps, skip = flags["betas"], flags["eps"], flags.get("skip_step")
    sizes = [1, 300, 1023, 2049]
    ids = [3 + i for i in range(len(sizes))]
    b = make_bucket(sizes, pth, amsgrad=amsgrad, seed=12)
    gen = torch.Generator().manual_seed(6)
    scale_t = None if scale is None else torch.tensor([scale])
    for t in range(1, 4):
        grads = [hard_values(n, gen, span=grad_span(pth), dtype=pth.param_dtype) for n in sizes]
        grads = [q8_blocks(g, gen, pth.format).to(pth.param_dtype) for g in grads]
        found_inf = None if skip is None else torch.tensor([float(t == skip)])
        kw = dict(lr=2e-3 * t, lr_peak=1e-2, beta1=beta1, beta2=beta2, eps=eps)
        before = {k: [x.clone() for x in v] for k, v in b.items()}
        hs = host_scalars(**kw, step=t, decay_mode=decay, tau_iters=50.0, weight_decay=0.3)
        reference.adamw_step_(b["params"], grads, b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"],
                              b["masters"], hs.as_tensor(), ids, 99, amsgrad, maximize, pth.stochastic_rounding,
                              scale_t, found_inf, **scale_lists(b), state_format=pth.format.id)
        s = oracle.host_scalars(**kw, t=t, decay=decay, tau_iter=50.0, weight_decay=0.3)
        for i in range(len(sizes)):
            fmt, n = pth.format, sizes[i]
            dec = {k: fmt.decode(before[k][i], before[sk][i], MOMENT[k], (n,)).numpy()
                   for k, sk in SCALE_KEYS.items() if before[k]}
            out = oracle.adamw_step(before["params"][i].float().numpy(), grads[i].float().numpy(), dec["exp_avgs"],
                                    dec["exp_avg_sqs"], dec["max_exp_avg_sqs"] if amsgrad else None,
                                    before["masters"][i].float().numpy() if pth.master else None, s,
                                    maximize=maximize, param_dtype=DT[pth.param_dtype], state_dtype="float32",
                                    stochastic_rounding=pth.stochastic_rounding, seed=99, param_id=ids[i],
                                    grad_scale=scale, found_inf=t == skip, remainder=pth.master == "remainder")
            want = dict(zip(KEYS, out))
            for key in ("params", "masters"):
                if want[key] is not None:
                    assert _differing(b[key][i].float().numpy(), want[key]) == 0, f"{key}[{i}] step {t}"
            encoded = {key: fmt.encode(torch.from_numpy(want[key]), MOMENT[key])
                       for key in SCALE_KEYS if want[key] is not None}
            # the zero rule: m's zero code where the v the next step divides by decodes to 0
            divides_by = encoded["max_exp_avg_sqs" if amsgrad else "exp_avg_sqs"]
            encoded["exp_avgs"] = (fmt.zero_rule(encoded["exp_avgs"][0], *divides_by, n), encoded["exp_avgs"][1])
            for key, sk in SCALE_KEYS.items():
                if want[key] is None:
                    continue
                if t == skip:  # nothing is written: the codes and scales as they were
                    codes, scales = before[key][i], before[sk][i]
                else:
                    codes, scales = encoded[key]
                assert differing_lists([b[key][i], b[sk][i]], [codes, scales]) == 0, f"{key}[{i}] step {t}"


@pytest.mark.cuda
@pytest.mark.parametrize("path", list(PATHS))
def test_reference_cpu_equals_cuda(path):
    from adamw_tau.testing.parity import clone_bucket, differing_words
    pth = PATHS[path]
    sizes = [1, 1023, 100_003]
    cpu = make_bucket(sizes, pth, amsgrad=True, seed=4)
    gpu = {k: [t.cuda() for t in v] for k, v in clone_bucket(cpu).items()}
    gen = torch.Generator().manual_seed(8)
    for t in range(1, 6):
        grads = [hard_values(n, gen, span=6.0).to(pth.param_dtype) for n in sizes]
        s = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=t, decay_mode="tau",
                         tau_iters=100.0)
        for st, dev in ((cpu, "cpu"), (gpu, "cuda")):
            reference.adamw_step_(st["params"], [g.to(dev) for g in grads], st["exp_avgs"], st["exp_avg_sqs"],
                                  st["max_exp_avg_sqs"], st["masters"], s.as_tensor(dev), [0, 1, 2], 5, True,
                                  False, pth.stochastic_rounding, None, None, **scale_lists(st),
                                  state_format=pth.format.id)
    assert differing_words(cpu, gpu) == 0
