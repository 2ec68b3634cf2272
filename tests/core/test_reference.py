"""The reference against an independent NumPy evaluation of the contract, bit for bit."""
import numpy as np
import pytest
import torch

from adamw_tau.core import reference
from adamw_tau.core.contract import host_scalars, sr_bits, sr_key
from adamw_tau.testing.parity import PATHS, grad_span, hard_values, make_bucket
from numpy_oracle import adamw_step, stochastic_round_np, sr_bits_np

DT = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("amsgrad,maximize,decay,scale", [
    (False, False, "tau", None), (True, False, "lambda", None), (False, True, "none", 1024.0),
])
def test_reference_matches_numpy_oracle(path, amsgrad, maximize, decay, scale):
    pth = PATHS[path]
    sizes = [1, 3, 1023, 2049]
    b = make_bucket(sizes, pth, amsgrad=amsgrad, seed=11)
    gen = torch.Generator().manual_seed(5)
    st = {k: [t.float().numpy().copy() for t in v] for k, v in b.items()}
    scale_t = None if scale is None else torch.tensor([scale])
    for t in range(1, 9):
        grads = [hard_values(n, gen, span=grad_span(pth)).to(pth.param_dtype) for n in sizes]
        hs = host_scalars(lr=2e-3 * t, lr_peak=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, step=t, decay_mode=decay,
                          tau_iters=50.0, weight_decay=0.3)
        reference.adamw_step_(b["params"], grads, b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"],
                              b["masters"], hs.as_tensor(), [3 + i for i in range(len(sizes))], 99, amsgrad,
                              maximize, pth.stochastic_rounding, scale_t, None)
        for i in range(len(sizes)):
            out = adamw_step(st["params"][i], grads[i].float().numpy(), st["exp_avgs"][i], st["exp_avg_sqs"][i],
                             st["max_exp_avg_sqs"][i] if amsgrad else None,
                             st["masters"][i] if pth.master else None, hs, amsgrad=amsgrad, maximize=maximize,
                             param_dtype=DT[pth.param_dtype], state_dtype=DT[pth.state_dtype],
                             stochastic_rounding=pth.stochastic_rounding, seed=99, param_id=3 + i,
                             grad_scale=scale)
            for key, val in zip(("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "masters"), out):
                if val is None:
                    continue
                st[key][i] = val
                got = b[key][i].float().numpy()
                nan = np.isnan(got)
                assert np.array_equal(nan, np.isnan(val)), (key, i, t)
                diff = int((_bits(got)[~nan] != _bits(val)[~nan]).sum())
                assert diff == 0, f"{key}[{i}] step {t}: {diff} words differ"


def test_data_covers_subnormals_zeros_and_extremes():
    x = hard_values(100_000, torch.Generator().manual_seed(0))
    ax = x.abs()
    assert (x == 0).any() and ((ax > 0) & (ax < torch.finfo(torch.float32).tiny)).any()
    assert (ax > 1e15).any() and ((ax < 1e-15) & (ax > 0)).any() and (x < 0).any()


def test_reference_is_not_torch_fp32_sqrt():
    # the reason the reference does not trust torch's fp32 ops: exercise the sqrt path on many words
    x = hard_values(1 << 20, torch.Generator().manual_seed(1), positive=True)
    ours = reference._r(torch.sqrt(x.double())).float()
    exact = np.sqrt(x.double().numpy()).astype(np.float32)
    assert np.array_equal(_bits(ours.numpy()), _bits(exact))


def test_sr_bits_match_python_and_cover_64bit_indices():
    key = sr_key(2**40 + 17, 12, 5)
    idx = torch.tensor([0, 1, 2**31 + 3, 2**33 + 1], dtype=torch.int64)
    got = sr_bits(key, idx).tolist()
    from adamw_tau.core.contract import mix32
    want = [mix32(mix32((i >> 32) ^ key) ^ (i & 0xFFFFFFFF)) for i in idx.tolist()]
    assert got == want
    assert len(set(got)) == 4
    assert sr_bits_np(key, 2).tolist() == got[:2]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_round_matches_oracle_and_is_unbiased(dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.cat([hard_values(4000, gen, span=6.0), torch.tensor([float("inf"), -float("inf"), 3e-9, -7e-8])])
    bits = sr_bits(sr_key(1, 2, 3), torch.arange(x.numel()))
    got = reference.stochastic_round(x, bits, dtype).float().numpy()
    want = stochastic_round_np(x.numpy(), bits.numpy().astype(np.uint64), DT[dtype])
    assert np.array_equal(_bits(got), _bits(want))
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
        for x, y in zip(b[k], before[k]):
            assert torch.equal(x.view(torch.int16 if x.element_size() == 2 else torch.int32),
                               y.view(torch.int16 if y.element_size() == 2 else torch.int32))


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
                                  False, pth.stochastic_rounding, None, None)
    assert differing_words(cpu, gpu) == 0
