"""master_weights="remainder": the fp32 master kept as the bf16 param + an int16 remainder.

The master a remainder run holds (param and remainder merged) must be the master a
master_weights=True run keeps, word for word, at every step, given the same gradients; its
param is the format's rounding of that master (ties away from zero, NaN -> 0x7FC0). Checked
on hard data on every backend CI runs, through GradScaler skips, amsgrad, maximize, device
counting, torch.compile and every state-dict conversion.
"""
import io

import pytest
import torch
from required import require

from adamw_tau import AdamWTau
from adamw_tau.formats import bf16_remainder
from adamw_tau.testing.bits import differing
from adamw_tau.testing.hard_data import hard_values

SHAPES = [(33, 65), (4097,), (8,), (1,), (2, 4096)]
BACKENDS = ["reference", "cpu", "triton"]
OPTIONS = {
    "plain": dict(),
    "amsgrad_maximize_lambda": dict(amsgrad=True, maximize=True, weight_decay=0.1),
    "bf16_states_betas_0": dict(state_dtype=torch.bfloat16, betas=(0.0, 0.95), eps=0.0),
    "capturable": dict(capturable=True, amsgrad=True),
}


def _params(seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(hard_values(torch.Size(s).numel(), gen, span=4.0, dtype=torch.bfloat16)
                               .to(torch.bfloat16).reshape(s).to(device)) for s in SHAPES]


def _grads(params, t, skip=False):
    gen = torch.Generator().manual_seed(1000 + t)
    for p in params:
        g = hard_values(p.numel(), gen, span=12.0, dtype=torch.bfloat16).to(torch.bfloat16).reshape(p.shape)
        if skip:
            g.view(-1)[0] = float("inf")
        p.grad = g.to(p.device)


def _master(opt, p) -> torch.Tensor:
    st = opt.state[p]
    if "master_remainder" in st:
        return bf16_remainder.merge(p.detach(), st["master_remainder"])
    return st["master_param"]


def assert_same_master(ps_rem, o_rem, ps_full, o_full, where=""):
    """The remainder run's master is the fp32 run's; its param is the format's rounding of it;
    moments and step counts agree."""
    for i, (a, b) in enumerate(zip(ps_rem, ps_full)):
        assert "master_param" not in o_rem.state[a] and o_rem.state[a]["master_remainder"].dtype == torch.int16
        full = o_full.state[b]["master_param"]
        assert differing(_master(o_rem, a), full) == 0, f"{where} params[{i}]: master"
        assert differing(a.detach(), bf16_remainder.round_param(full.cpu()).to(a.device)) == 0, f"{where} [{i}] param"
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"):
            if key in o_full.state[b]:
                x, y = o_rem.state[a][key], o_full.state[b][key]
                assert differing(x.float(), y.float()) == 0, f"{where} params[{i}]: {key}"


def _pair(backend, options, device="cpu"):
    a, b = _params(device=device), _params(device=device)
    kw = dict(lr=1e-2, backend=backend, **options)
    if "weight_decay" not in kw:
        kw["tau_iters"] = 30.0
    return a, AdamWTau(a, master_weights="remainder", **kw), b, AdamWTau(b, master_weights=True, **kw)


def _steps_keep_the_same_master(ps_rem, o_rem, ps_full, o_full, steps=5):
    for t in range(steps):
        for ps in (ps_rem, ps_full):
            _grads(ps, t)
        o_rem.step()
        o_full.step()
        assert_same_master(ps_rem, o_rem, ps_full, o_full, f"step {t}")


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_remainder_master_is_the_fp32_master_bit_for_bit(backend, options):
    require(backend)
    _steps_keep_the_same_master(*_pair(backend, OPTIONS[options]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_skipped_gradscaler_step_changes_no_bit(backend):
    """GradScaler's found_inf and scale reach the kernel; a skipped step writes nothing."""
    require(backend)
    ps_rem, o_rem, ps_full, o_full = _pair(backend, dict(amsgrad=True))
    for t in range(4):
        skip = t == 2
        for ps in (ps_rem, ps_full):
            _grads(ps, t, skip=skip)
        before = [(p.detach().clone(), o_rem.state[p]["master_remainder"].clone()) if p in o_rem.state else None
                  for p in ps_rem]
        for o in (o_rem, o_full):
            o.grad_scale = torch.tensor([3.0])
            o.found_inf = torch.tensor([float(skip)])
            o.step()
        if skip:
            for p, b in zip(ps_rem, before):
                assert differing(p.detach(), b[0]) == 0 and differing(o_rem.state[p]["master_remainder"], b[1]) == 0
        assert_same_master(ps_rem, o_rem, ps_full, o_full, f"step {t}")


@pytest.mark.parametrize("backend", ["cpu", pytest.param("triton", marks=pytest.mark.slow)])  # triton: 7 CPU s
def test_compiled_remainder_step_has_the_eager_bits(backend):
    require(backend)
    torch._dynamo.reset()
    eager_ps, compiled_ps = _params(), _params()
    kw = dict(lr=1e-2, tau_iters=30.0, amsgrad=True, backend=backend, master_weights="remainder")
    eager, compiled = AdamWTau(eager_ps, **kw), AdamWTau(compiled_ps, **kw)
    step = torch.compile(compiled.step, backend="aot_eager", fullgraph=True)
    for t in range(4):
        _grads(eager_ps, t)
        _grads(compiled_ps, t)
        eager.step()
        step()
        for a, b in zip(eager_ps, compiled_ps):
            assert differing(a.detach(), b.detach()) == 0
            for key in ("master_remainder", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                assert differing(eager.state[a][key], compiled.state[b][key]) == 0, (t, key)


def _saved(opt) -> dict:
    """A state dict through torch.save and torch.load(weights_only=True), as a checkpoint goes."""
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@torch.no_grad()
def _plant_ties(params, opt, form) -> None:
    """Put exact ties in every 7th master word (low half 0x8000, high half even), where the
    two forms' params differ: the fp32 form's param rounds them to even, the remainder's away."""
    for p in params:
        st = opt.state[p]
        if form is True:
            words = st["master_param"].view(torch.int32)
            words.view(-1)[::7] = (words.view(-1)[::7] & ~0x1FFFF) | 0x8000
            p.copy_(st["master_param"].to(torch.bfloat16))
        elif form == "remainder":
            st["master_remainder"].view(-1)[::7] = -0x8000
            bits = p.view(torch.int16).view(-1)
            bits[::7] = bits[::7] | 1  # odd: the high half below it, p - 1, is even
    for p in params:
        m = _master(opt, p) if form in (True, "remainder") else None
        if m is not None:
            ties = ((m.view(torch.int32) & 0x1FFFF) == 0x8000) & ~torch.isnan(m)
            assert ties.sum() >= p.numel() // 20, "the ties were planted"


def _train(params, opt, steps, start=0):
    for t in range(start, start + steps):
        _grads(params, t)
        opt.step()


@pytest.mark.parametrize("saved_as,loaded_as", [("remainder", "remainder"), (True, "remainder"),
                                                ("remainder", True), ("torch", "remainder")])
def test_state_dicts_convert_between_master_forms_exactly(saved_as, loaded_as):
    """A run changes master form at a checkpoint and goes on with the master it had, bit for
    bit: the uninterrupted fp32-master run is the yardstick. torch AdamW's state dict (no
    master) starts the master at the param, as a fp32-master run loading it does."""
    require("cpu")
    kw = dict(lr=1e-2, tau_iters=30.0, amsgrad=True, backend="cpu")
    first = _params()
    if saved_as == "torch":
        opt = torch.optim.AdamW(first, lr=1e-2, weight_decay=0.0, amsgrad=True)
    else:
        opt = AdamWTau(first, master_weights=saved_as, **kw)
    _train(first, opt, 3)
    _plant_ties(first, opt, saved_as)
    sd = _saved(opt)
    # the yardstick: the same first part, then an fp32-master run loading the same checkpoint
    straight = [torch.nn.Parameter(p.detach().clone()) for p in first]
    yard = AdamWTau(straight, master_weights=True, **kw)
    yard.load_state_dict(sd)
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]  # the model loaded first
    ropt = AdamWTau(resumed, master_weights=loaded_as, **kw)
    ropt.load_state_dict(sd)
    assert all(g["master_weights"] == loaded_as for g in ropt.param_groups)  # the run's own form stays
    for i, (a, b) in enumerate(zip(resumed, straight)):  # loaded: the master, and the param in the run's form
        if saved_as == "torch":  # no master saved: it is made from the param at the first step
            continue
        master = yard.state[b]["master_param"]
        if loaded_as == "remainder":
            assert differing(_master(ropt, a), master) == 0, i
        want = bf16_remainder.round_param(master) if loaded_as == "remainder" else master.to(torch.bfloat16)
        assert differing(a.detach(), want) == 0, i
    for t in range(3, 6):
        _train(straight, yard, 1, start=t)
        _train(resumed, ropt, 1, start=t)
        for i, (a, b) in enumerate(zip(resumed, straight)):
            assert differing(_master(ropt, a), yard.state[b]["master_param"]) == 0, (t, i)
    keys = {k for st in ropt.state.values() for k in st}
    assert ("master_remainder" in keys) == (loaded_as == "remainder") and ("master_param" in keys) == (loaded_as is True)


def test_a_remainder_checkpoint_resumes_bit_for_bit():
    require("cpu")
    kw = dict(lr=1e-2, tau_iters=30.0, backend="cpu", master_weights="remainder", state_dtype=torch.bfloat16)
    straight = _params()
    so = AdamWTau(straight, **kw)
    _train(straight, so, 6)
    first = _params()
    fo = AdamWTau(first, **kw)
    _train(first, fo, 3)
    sd = _saved(fo)
    assert {v.dtype for st in sd["state"].values() for k, v in st.items() if k == "master_remainder"} == {torch.int16}
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    ro = AdamWTau(resumed, **kw)
    ro.load_state_dict(sd)
    _train(resumed, ro, 3, start=3)
    for a, b in zip(resumed, straight):
        assert differing(a.detach(), b.detach()) == 0
        assert differing(ro.state[a]["master_remainder"], so.state[b]["master_remainder"]) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_remainder_with_other_param_dtypes_is_refused_naming_the_parameter(dtype):
    ok = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    bad = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
    with pytest.raises(ValueError, match=r"param group 0: params\[1\] is torch\.float.*master_weights='remainder'"):
        AdamWTau([ok, bad], master_weights="remainder")
    opt = AdamWTau([{"params": [ok], "master_weights": "remainder"}, {"params": [bad]}])  # per group: fine
    assert opt.param_groups[1]["master_weights"] is False


def test_a_group_switched_to_remainder_on_fp16_params_raises_before_any_write():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float16))
    opt = AdamWTau([p], backend="reference")
    opt.param_groups[0]["master_weights"] = "remainder"
    p.grad = torch.ones(3, dtype=torch.float16)
    with pytest.raises(ValueError, match="master_weights='remainder'"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float16)) and not opt.state


@pytest.mark.parametrize("value", ["yes", "True", 1.0, "fp32"])
def test_master_weights_takes_a_bool_or_remainder_only(value):
    with pytest.raises(TypeError, match="master_weights must be True, False or 'remainder'"):
        AdamWTau([torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))], master_weights=value)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("options", list(OPTIONS))
def test_on_the_gpu_the_remainder_master_is_the_fp32_master(backend, options):
    require(backend, "cuda")
    _steps_keep_the_same_master(*_pair(backend, OPTIONS[options], device="cuda"))


NAN_WORDS = [0x7FFFFFFF, 0xFFFFFFFF, 0x7FFF8000, 0x7F800001, 0xFF80FFFF, 0x7FC00000]


@pytest.fixture(scope="module")
def step_functions(host_body_library):
    """Each backend's list-form step, and the CUDA kernel body compiled for the host."""
    from adamw_tau.launch import ops
    from adamw_tau.testing import host_body
    out = {name: ops.step_function(name) for name in BACKENDS}
    out["cuda_body_on_host"] = host_body.HostBody(host_body_library).step()
    return out


@pytest.mark.parametrize("backend", BACKENDS + ["cuda_body_on_host"])
def test_a_nan_master_is_a_nan_param_whatever_its_payload(backend, step_functions):
    """fp32 gradients carrying NaNs whose payloads TE's split would hide (0x7FFFFFFF, CUDA's
    NaN, splits to -0.0 there) make NaN masters with those payloads on the CPU: the param must
    be the NaN 0x7FC0 and the remainder 0, on every backend."""
    require("cpu" if backend == "cuda_body_on_host" else backend)
    from adamw_tau.core.contract import host_scalars
    step = step_functions[backend]
    n = 64
    words = torch.tensor(NAN_WORDS * (n // len(NAN_WORDS)) + [0] * (n % len(NAN_WORDS)), dtype=torch.int64)
    g = torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32).view(torch.float32).clone()
    g[-(n % len(NAN_WORDS)):] = 1.0
    p = torch.linspace(-2, 2, n).to(torch.bfloat16)
    m, v, rem = torch.zeros(n), torch.zeros(n), torch.zeros(n, dtype=torch.int16)
    s = host_scalars(lr=1e-2, lr_peak=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="none")
    step([p], [g], [m], [v], [], [rem], s.as_tensor(), [0], 0, False, False, False, None, None)
    nan = torch.isnan(g)
    assert nan.sum() == n - n % len(NAN_WORDS)
    assert torch.equal(p.view(torch.int16)[nan], torch.full((int(nan.sum()),), 0x7FC0, dtype=torch.int16))
    assert torch.equal(rem[nan], torch.zeros(int(nan.sum()), dtype=torch.int16))
    assert not torch.isnan(p[~nan]).any()


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_a_captured_remainder_step_replays_the_eager_bits(backend):
    """capturable=True in a CUDA graph: replays with new gradients give what eager steps give."""
    require(backend, "cuda")
    ps, qs = _params(device="cuda"), _params(device="cuda")
    kw = dict(lr=1e-2, tau_iters=30.0, backend=backend, capturable=True, amsgrad=True, master_weights="remainder")
    graphed, eager = AdamWTau(ps, **kw), AdamWTau(qs, **kw)
    static = [torch.zeros_like(p) for p in ps]
    for p, g in zip(ps, static):
        p.grad = g

    def grads(t):
        _grads(qs, t)  # hard data, on the device; the same values for both runs
        return [q.grad for q in qs]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for t in range(2):
            for g, v in zip(static, grads(t)):
                g.copy_(v)
            graphed.step()
    torch.cuda.current_stream().wait_stream(side)
    for t in range(2):
        grads(t)
        eager.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.step()
    for t in range(2, 5):
        for g, v in zip(static, grads(t)):
            g.copy_(v)
        graph.replay()
        eager.step()
    torch.cuda.synchronize()
    for p, q in zip(ps, qs):
        assert differing(p.detach(), q.detach()) == 0
        assert differing(graphed.state[p]["master_remainder"], eager.state[q]["master_remainder"]) == 0
