"""state_dtype="8bit" through the optimizer (formats/q8_blockwise.py, docs/numerics.md "8-bit
states"): which tensors it applies to, the same bits on every backend CI runs, checkpoints
(native, torch AdamW's in and out), a GradScaler skip, clear errors, and the sharding rule."""
import copy
import io
import math

import pytest
import torch
from required import require

from adamw_tau import AdamWTau
from adamw_tau.core import reference
from adamw_tau.core.contract import host_scalars
from adamw_tau.formats import q8_blockwise as q8
from adamw_tau.testing.bits import differing, differing_optimizers
from adamw_tau.testing.hard_data import hard_values, q8_blocks

BACKENDS = ["reference", "cpu", "triton"]
# the Triton runs of the optimizer-level tests cost 19-65 CPU s each (interpreter): full tier; the
# fast tier runs Triton's 8-bit bits through the parity cases and the rule tests below
SLOW_TRITON = ["reference", "cpu", pytest.param("triton", marks=pytest.mark.slow)]
SIZES = [5000, 4096, 300, 4095, 8193]  # 300 and 4095 below q8_min_numel: fp32 states
KW = dict(lr=1e-2, betas=(0.8, 0.9), tau_iters=20.0, amsgrad=True, state_dtype="8bit")


def _params(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g).to(dtype).requires_grad_() for n in SIZES]


def _step(opt, params, t):
    for i, p in enumerate(params):
        g = torch.Generator().manual_seed(1000 * t + i)
        p.grad = (torch.randn(p.shape, generator=g) * 10.0 ** (i - 2)).to(device=p.device, dtype=p.dtype)
    opt.step()


def _run(backend, steps, dtype=torch.float32, **kw):
    ps = _params(dtype)
    opt = AdamWTau(ps, backend=backend, **{**KW, **kw})
    for t in range(steps):
        _step(opt, ps, t)
    return ps, opt


def test_big_tensors_take_codes_and_scales_small_ones_fp32():
    ps, opt = _run("reference", 1)
    for p in ps:
        st = opt.state[p]
        if p.numel() >= q8.MIN_NUMEL:
            assert st["exp_avg_q8"].dtype == st["exp_avg_sq_q8"].dtype == st["max_exp_avg_sq_q8"].dtype == torch.uint8
            assert st["exp_avg_q8"].shape == p.shape and "exp_avg" not in st
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                assert st[key + "_scale"].dtype == torch.float32 and st[key + "_scale"].shape == (q8.n_blocks(p.numel()),)
        else:
            assert st["exp_avg"].dtype == torch.float32 and "exp_avg_scale" not in st and "exp_avg_q8" not in st
    # the threshold is per group
    ps = _params()
    opt = AdamWTau([{"params": ps[:2], "q8_min_numel": 4097}, {"params": ps[2:]}], backend="reference", **KW)
    _step(opt, ps, 0)
    assert [next(opt.state[p][k] for k in ("exp_avg", "exp_avg_q8") if k in opt.state[p]).dtype
            for p in ps] == [torch.uint8, torch.float32, torch.float32, torch.float32, torch.uint8]


@pytest.mark.parametrize("backend", ["cpu", pytest.param("triton", marks=pytest.mark.slow)])  # triton: 21 CPU s each
@pytest.mark.parametrize("dtype,kw", [(torch.float32, {}), (torch.bfloat16, {"master_weights": True}),
                                      (torch.bfloat16, {"stochastic_rounding": True, "maximize": True})])
def test_every_backend_gives_the_references_bits(backend, dtype, kw):
    require(backend)
    a, oa = _run(backend, 3, dtype, **kw)
    b, ob = _run("reference", 3, dtype, **kw)
    assert differing_optimizers(a, oa, b, ob) == {}


@pytest.mark.parametrize("backend", SLOW_TRITON)  # triton: 65 CPU s
def test_a_checkpoint_resumes_bit_for_bit(backend):
    require(backend)
    straight, so = _run(backend, 5)
    first, fo = _run(backend, 2)
    buf = io.BytesIO()
    torch.save(fo.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert sd["state"][0]["q8_format"] == q8.FORMAT_VERSION and sd["state"][0]["exp_avg_q8"].dtype == torch.uint8
    resumed = [p.detach().clone().requires_grad_() for p in first]
    ro = AdamWTau(resumed, backend=backend, **KW)
    ro.load_state_dict(sd)
    for t in (2, 3, 4):
        _step(ro, resumed, t)
    assert differing_optimizers(straight, so, resumed, ro) == {}


def test_torch_adamw_state_dicts_go_in_and_out():
    ps = _params()
    torch_opt = torch.optim.AdamW(ps, lr=1e-2, amsgrad=True)
    for t in range(2):
        _step(torch_opt, ps, t)
    sd = copy.deepcopy(torch_opt.state_dict())
    ours = AdamWTau([p.detach().clone().requires_grad_() for p in ps], backend="reference", **KW)
    ours.load_state_dict(sd)
    for i, p in enumerate(ours.param_groups[0]["params"]):
        st, src = ours.state[p], sd["state"][i]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if p.numel() >= q8.MIN_NUMEL:  # encoded by the format's rules: one answer
                codes, scales = q8.encode(src[key], key == "exp_avg")
                if key == "exp_avg":  # m's zero where amsgrad's v has code 0
                    codes = q8.zero_rule(codes, q8.encode(src["max_exp_avg_sq"], False)[0])
                assert torch.equal(st[key + "_q8"], codes) and differing(st[key + "_scale"], scales) == 0
            else:
                assert differing(st[key], src[key]) == 0
    out = ours.torch_state_dict()
    back = torch.optim.AdamW([p.detach().clone().requires_grad_() for p in ps], lr=1e-2, amsgrad=True)
    back.load_state_dict(out)
    for i, p in enumerate(back.param_groups[0]["params"]):
        st = back.state[p]
        assert set(st) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
        mine = ours.state[ours.param_groups[0]["params"][i]]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            want = (q8.decode(mine[key + "_q8"], mine[key + "_scale"], key == "exp_avg") if key not in mine
                    else mine[key])
            assert st[key].dtype == torch.float32 and differing(st[key], want) == 0


def test_an_fp32_state_checkpoint_loads_into_8bit_and_back():
    ps, fp32 = _run("reference", 2, state_dtype=None)
    sd = copy.deepcopy(fp32.state_dict())
    sd["param_groups"][0]["state_dtype"] = "8bit"  # a loaded group's options are the checkpoint's, as in torch
    q = AdamWTau([p.detach().clone().requires_grad_() for p in ps], backend="reference", **KW)
    q.load_state_dict(sd)
    big = q.param_groups[0]["params"][0]
    assert q.state[big]["exp_avg_q8"].dtype == torch.uint8 and "exp_avg" not in q.state[big]
    plain = AdamWTau([p.detach().clone().requires_grad_() for p in ps], backend="reference", **{**KW,
                                                                                                "state_dtype": None})
    sd = copy.deepcopy(q.state_dict())
    sd["param_groups"][0]["state_dtype"] = None
    plain.load_state_dict(sd)  # codes into an fp32 group: decoded
    st = plain.state[plain.param_groups[0]["params"][0]]
    assert st["exp_avg"].dtype == torch.float32 and "exp_avg_scale" not in st and "exp_avg_q8" not in st
    assert differing(st["exp_avg"], q8.decode(q.state[big]["exp_avg_q8"], q.state[big]["exp_avg_scale"], True)) == 0


@pytest.mark.parametrize("backend", SLOW_TRITON)  # triton: 19 CPU s
def test_a_gradscaler_skip_changes_no_bit(backend):
    require(backend)
    ps, opt = _run(backend, 2)
    before = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in ps}
    params_before = [p.detach().clone() for p in ps]
    for p in ps:
        p.grad = torch.full_like(p, float("nan"))
    opt.grad_scale = torch.tensor([1024.0])
    opt.found_inf = torch.tensor([1.0])
    opt.step()
    for p, p0 in zip(ps, params_before):
        assert differing(p, p0) == 0
        for k, v in before[id(p)].items():
            assert differing(opt.state[p][k], v) == 0, k


@pytest.mark.parametrize("bad,match", [("int8", "8bit"), ("8-bit", "8bit"), (torch.uint8, "state_dtype")])
def test_a_bad_state_dtype_is_refused(bad, match):
    with pytest.raises(TypeError, match=match):
        AdamWTau(_params(), state_dtype=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "4096"])
def test_a_bad_q8_min_numel_is_refused(bad):
    with pytest.raises(TypeError, match="q8_min_numel"):
        AdamWTau(_params(), state_dtype="8bit", q8_min_numel=bad)


def test_a_checkpoint_of_another_version_or_without_scales_is_refused_before_any_change():
    ps, opt = _run("reference", 1)
    fresh = AdamWTau([p.detach().clone().requires_grad_() for p in ps], backend="reference", **KW)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["q8_format"] = 99
    with pytest.raises(ValueError, match="version 99"):
        fresh.load_state_dict(sd)
    sd = copy.deepcopy(opt.state_dict())
    del sd["state"][0]["exp_avg_sq_scale"]
    with pytest.raises(ValueError, match="exp_avg_sq_scale"):
        fresh.load_state_dict(sd)
    assert len(fresh.state) == 0


def test_a_replaced_scale_tensor_of_the_wrong_shape_is_refused():
    ps, opt = _run("reference", 1)
    opt.state[ps[0]]["exp_avg_scale"] = torch.zeros(3)
    with pytest.raises(RuntimeError, match="exp_avg_scale"):
        _step(opt, ps, 1)


def _fp32_state(n, seed):
    gen = torch.Generator().manual_seed(seed)
    p = hard_values(n, gen, span=3.0)
    p = torch.where(torch.isfinite(p), p, 1.0)
    m = q8_blocks(hard_values(n, gen, span=4.0), gen)
    v = q8_blocks(hard_values(n, gen, positive=True, span=4.0), gen).abs()
    g = q8_blocks(hard_values(n, gen, span=4.0), gen)
    return p, g, m, v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cut,same", [(512, True), (768, True), (300, False)])
def test_sharding_at_multiples_of_256_changes_no_bit(backend, cut, same):
    """FSDP2 and ZeRO step local shards, and blocks run over the shard: a tensor stepped whole
    equals it stepped as two shards cut at a multiple of 256 (both starting from the same fp32
    moments, encoded over the whole or over each shard), and not in general otherwise."""
    require(backend)
    from adamw_tau.launch.ops import step_function
    n = 1100
    p, g, m, v = _fp32_state(n, 3)
    s = host_scalars(lr=1e-2, lr_peak=1e-2, beta1=0.0, beta2=0.9, eps=1e-8, step=2, decay_mode="none").as_tensor()
    step = step_function(backend) if backend != "reference" else reference.adamw_step_
    out = []
    for lo, hi in ((0, n),) + ((0, cut), (cut, n)):
        (mc, ms), (vc, vs) = q8.encode(m[lo:hi], True), q8.encode(v[lo:hi], False)
        w = p[lo:hi].clone()
        step([w], [g[lo:hi].clone()], [mc], [vc], [], [], s, [0], 0, False, False, False, None, None,
             exp_avg_scales=[ms], exp_avg_sq_scales=[vs])
        out.append((w, mc, vc))
    whole, a, b = out
    differ = sum(differing(torch.cat([a[k], b[k]]), whole[k]) for k in range(3))
    assert (differ == 0) == same, differ


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_8bit_paths_on_the_gpu_give_the_references_bits(backend):
    """Compiled Triton and the CUDA warp kernel on the GPU (bench/gpu_check.sh runs this): every
    8-bit path under every flag set of the CPU cases, then through the optimizer."""
    from adamw_tau.launch.backends import availability
    from adamw_tau.testing.cases import FLAG_SETS, hard_case
    from adamw_tau.testing.parity import PATHS, parity_bits
    reason = availability(backend, torch.device("cuda"))
    assert reason is None, f"{backend} must run on this GPU: {reason}"
    sizes, offsets = [1, 300, 4096, 5000, 70_001], [0, 1, 0, 3, 0]
    failures = []
    for name in [n for n, p in PATHS.items() if p.quantized]:
        for case in FLAG_SETS:
            for scalars in ("tensor", "values"):
                bits = parity_bits(backend, PATHS[name], sizes, device="cuda", offsets=offsets, scalars=scalars,
                                   guard=16, **hard_case(name, case))
                if bits:
                    failures.append(f"{name} {case} {scalars}: {bits} words")
    assert not failures, "\n".join(failures)
    ps = [p.detach().cuda().requires_grad_() for p in _params()]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    oa, ob = AdamWTau(ps, backend=backend, **KW), AdamWTau(qs, backend="reference", **KW)
    for t in range(3):
        _step(oa, ps, t)
        _step(ob, qs, t)
    assert differing_optimizers(ps, oa, qs, ob) == {}


@pytest.mark.parametrize("backend", ["cpu", "triton", "host_body"])
def test_threshold_ties_reach_every_kernel(backend, host_body_library):
    """With beta1 = 0 and no grad scale the new exp_avg is the fp32 gradient, and the
    "threshold ties" blocks of the data put x / max exactly on thresholds: each kernel must
    send them to the lower code, as the reference does."""
    from adamw_tau.testing import host_body
    from adamw_tau.testing.parity import PATHS, parity_bits
    if backend == "host_body":
        step = host_body.HostBody(host_body_library).step()
    else:
        require(backend)
        step = backend
    sizes = [4096, 2560, 700]
    gen = torch.Generator().manual_seed(1)  # parity_bits' gradient generator for seed 0 (seed + 1)
    grads = [q8_blocks(hard_values(n, gen, span=6.0), gen) for n in sizes]
    thr = set(q8.thresholds(True).tolist())
    ties = 0
    for g in grads:
        xhat = g / q8.block_absmax(g).repeat_interleave(q8.BLOCK)[:g.numel()]
        ties += sum(x in thr for x in xhat.tolist())
    assert ties > 200, "the first step's gradients put x / max on thresholds"
    assert parity_bits(step, PATHS["fp32_8bit"], sizes, steps=2, betas=(0.0, 0.9), seed=0) == 0


def test_an_8bit_checkpoint_never_loads_into_torch_adamw_as_values():
    """Codes are not moments: torch.optim.AdamW's load would cast them to fp32 (0..255) and run on
    them. Under their own keys its first step raises before writing anything; the way out,
    torch_state_dict(), gives the fp32 moments. A version-1 checkpoint (codes under the
    moments' keys) still resumes in AdamWTau."""
    ps, opt = _run("reference", 2)
    sd = copy.deepcopy(opt.state_dict())
    assert all("exp_avg" not in st or st["exp_avg"].dtype == torch.float32 for st in sd["state"].values())
    theirs = [p.detach().clone().requires_grad_() for p in ps]
    torch_opt = torch.optim.AdamW(theirs, lr=1e-2, amsgrad=True)
    torch_opt.load_state_dict(sd)
    before = [p.detach().clone() for p in theirs]
    with pytest.raises(KeyError, match="exp_avg"):
        _step(torch_opt, theirs, 2)
    assert all(differing(p, b) == 0 for p, b in zip(theirs, before))
    torch_opt = torch.optim.AdamW(theirs, lr=1e-2, amsgrad=True)
    torch_opt.load_state_dict(opt.torch_state_dict())
    big = torch_opt.state[theirs[0]]
    assert big["exp_avg"].abs().max().item() < 1.0  # moments, not codes
    v1 = copy.deepcopy(sd)  # format version 1: codes under the moments' own keys
    for st in v1["state"].values():
        if "q8_format" in st:
            st["q8_format"] = 1
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                st[key] = st.pop(key + "_q8")
    a, b = ([p.detach().clone().requires_grad_() for p in ps] for _ in range(2))
    oa, ob = AdamWTau(a, backend="reference", **KW), AdamWTau(b, backend="reference", **KW)
    oa.load_state_dict(sd)
    ob.load_state_dict(v1)
    _step(oa, a, 2)
    _step(ob, b, 2)
    assert differing_optimizers(a, oa, b, ob) == {}


# --- the zero rules: a later zero gradient never divides a non-zero m by eps alone --------------
LR = 1e-3


def _zero_gradient_move(backend, state_dtype, first):
    """p's move (fp64) in a zero-gradient step at lr 1e-3 after ``first`` (the optimizer, p) ran."""
    p = torch.zeros(4096, requires_grad=True)
    opt = AdamWTau([p], lr=LR, backend=backend, state_dtype=state_dtype)
    first(opt, p)
    before = p.detach().double().clone()
    p.grad = torch.zeros(4096)
    opt.step()
    return p.detach().double() - before, opt


def _one_gradient(opt, p):
    g = torch.zeros(4096)
    g[0], g[1] = 1.0, 1e-25  # (1 - beta2) * 1e-50 underflows: v[1] is exactly 0, m[1] is not
    p.grad = g
    opt.step()


def _tiny_beside_large(opt, p):
    p.grad = torch.zeros(4096)
    opt.step()  # a state to load into
    sd = opt.torch_state_dict()
    m, v = torch.zeros(4096), torch.zeros(4096)
    m[0], v[0] = 10.0, 10.0
    m[1], v[1] = 1e-22, 2.0 ** -149  # v[1] / 10 underflows to 0
    sd["state"][0]["exp_avg"], sd["state"][0]["exp_avg_sq"] = m, v
    opt.load_state_dict(sd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_v_underflowing_in_fp32_zeroes_m(backend):
    """One step with g = 1 and g = 1e-25 in one block: v[1] = 0 exactly in fp32 while m[1] is
    not. A zero-gradient step then moves p[1] by lr * m / eps with fp32 states (-4.7e-21); the
    8-bit m[1] decodes to 0 (it was the block's smallest step: -0.026 = 26 lr), so p[1] stays."""
    require(backend)
    fp32, _ = _zero_gradient_move(backend, None, _one_gradient)
    q, opt = _zero_gradient_move(backend, "8bit", _one_gradient)
    assert 0 < abs(fp32[1].item()) < 1e-20
    assert q[1].item() == 0.0, "where v decodes to 0, m decodes to 0: no move"
    assert abs(q[1].item()) <= abs(fp32[1].item())
    assert abs(q[0].item() - fp32[0].item()) <= 0.01 * abs(fp32[0].item())  # the large one moves as in fp32
    st = opt.state[opt.param_groups[0]["params"][0]]
    assert st["exp_avg_sq_q8"][1].item() == 0 and st["exp_avg_q8"][1].item() == q8.ZERO_CODE[True]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tiny_v_beside_a_large_one_still_divides_m(backend):
    """v = 2^-149 beside v = 10 in one block: v / 10 underflows to 0. The 8-bit v must not
    decode to 0 (it did, and m = 1e-22 at its smallest code over eps moved p by -2.6). The
    move is bounded by the format's resolution: m at its smallest code over v at its lowest
    positive code, |dp| <= |dp_fp32| + lr * (bc2 / bc1) * beta1 map[128] S_m / sqrt(beta2 map[1] S_v),
    S the block scales (here 6.5e-7; fp32 moves p by 4.7e-17)."""
    require(backend)
    fp32, _ = _zero_gradient_move(backend, None, _tiny_beside_large)
    q, opt = _zero_gradient_move(backend, "8bit", _tiny_beside_large)
    beta1, beta2, t = 0.9, 0.999, 2
    bc1, bc2 = 1 - beta1 ** t, math.sqrt(1 - beta2 ** t)
    m_step, v_step = q8.qmap(True)[128].item() * 10.0, q8.qmap(False)[1].item() * 10.0
    bound = LR * (bc2 / bc1) * beta1 * m_step / math.sqrt(beta2 * v_step)
    assert abs(q[1].item()) <= abs(fp32[1].item()) + bound * (1 + 1e-6)
    assert bound < 1e-6 and abs(q[1].item()) > 0  # m kept its sign and its smallest code
    st = opt.state[opt.param_groups[0]["params"][0]]
    assert q8.decode(st["exp_avg_sq_q8"], st["exp_avg_sq_scale"], False)[1].item() > 0


def _zero_rule_bucket(amsgrad: bool) -> tuple[dict, list]:
    """8-bit states and two steps of gradients at the zero rules' extremes, one q8 block each
    (a partial block last). In the states: quotients that underflow beside 10 and beside
    3.4e38, a subnormal and the smallest scale, an inf and a NaN block. On zero states (v
    decodes to 0), gradients whose squares underflow (v stays 0, m does not), squares of 1e-20
    beside one of 1e10 (the quotient underflows) and alone (a subnormal scale)."""
    B = q8.BLOCK
    n = 9 * B + 100
    gen = torch.Generator().manual_seed(11)
    m = torch.randn(n, generator=gen) * 1e-3
    v = torch.rand(n, generator=gen) * 1e-6
    v[0:B] = 2.0 ** -149
    v[0] = 10.0
    v[B:2 * B] = torch.rand(B, generator=gen) * 1e-30
    v[B] = 3.4028234663852886e38
    v[2 * B:3 * B] = (torch.randint(1, 2 ** 10, (B,), generator=gen).double() * 2.0 ** -149).float()  # subnormal
    v[3 * B:4 * B] = 2.0 ** -149
    v[4 * B:7 * B] = 0.0
    m[4 * B:7 * B] = torch.randn(3 * B, generator=gen) * 1e-20
    v[7 * B] = float("inf")
    v[8 * B] = float("nan")
    g1 = torch.randn(n, generator=gen)
    g1[4 * B:5 * B] = torch.randn(B, generator=gen) * 1e-25  # (1 - beta2) g^2 underflows: v stays 0
    g1[5 * B:7 * B] = torch.randn(2 * B, generator=gen) * 1e-20  # v about 1e-43
    g1[5 * B] = 1e10  # ... beside 1e17: the quotient underflows; alone (6 * B on): a subnormal scale
    grads = [g1, torch.where(torch.rand(n, generator=gen) < 0.5, 0.0, -0.0)]
    b = dict(params=[torch.randn(n, generator=gen)], masters=[], max_exp_avg_sqs=[])
    (mc, ms), (vc, vs) = q8.encode(m, True), q8.encode(v, False)
    b.update(exp_avgs=[mc], exp_avg_scales=[ms], exp_avg_sqs=[vc], exp_avg_sq_scales=[vs])
    if amsgrad:  # max_exp_avg_sq: 0 in a third of the elements, else 2 v, or 1e-10 where v is 0
        vm = torch.where(v == 0, 1e-10, v * 2)  # m stays where v is 0 and vmax not: the step divides by vmax
        vmc, vms = q8.encode(torch.where(torch.arange(n) % 3 == 0, 0.0, vm), False)
        b.update(max_exp_avg_sqs=[vmc], max_exp_avg_sq_scales=[vms])
    return b, grads


@pytest.fixture(scope="module")
def host_body_step(host_body_library):
    """The CUDA kernel's body built for the host (the run's one build), one 256-element block a program."""
    from adamw_tau.testing import host_body
    return host_body.HostBody(host_body_library).step(256)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("backend", ["cpu", "triton", "host_body"])
def test_the_zero_rules_reach_every_kernel(backend, amsgrad, request):
    """The extremes of _zero_rule_bucket, two steps (the last with zero gradients): each kernel
    gives the reference's bits, and the reference keeps both rules: a positive v decodes above
    0, and m decodes to 0 wherever the v the next step divides by decodes to 0."""
    from adamw_tau.testing.parity import clone_bucket, step_both
    if backend == "host_body":
        step = request.getfixturevalue("host_body_step")
    else:
        require(backend)
        step = backend
    ours, grads = _zero_rule_bucket(amsgrad)
    ref = clone_bucket(ours)
    raised = zeroed = kept = 0
    for t, g in enumerate(grads, start=1):
        hs = host_scalars(lr=LR, lr_peak=LR, beta1=0.9, beta2=0.999, eps=1e-8, step=t, decay_mode="none")
        before = clone_bucket(ref)
        assert step_both(step, ours, ref, [g], hs, amsgrad=amsgrad) == 0
        # the rules on the reference's new state, against the fp32 values it encoded
        m_old = q8.decode(before["exp_avgs"][0], before["exp_avg_scales"][0], True).double()
        v_old = q8.decode(before["exp_avg_sqs"][0], before["exp_avg_sq_scales"][0], False).double()
        v_new = (0.999 * v_old).float().double() + (0.001 * (g.double() * g.double()).float().double()).float().double()
        v_new = v_new.float()
        m_new = ((0.9 * m_old).float().double() + (0.1 * g.double()).float().double()).float()
        v_dec = q8.decode(ref["exp_avg_sqs"][0], ref["exp_avg_sq_scales"][0], False)
        finite = torch.isfinite(ref["exp_avg_sq_scales"][0]).repeat_interleave(q8.BLOCK)[:v_dec.numel()]
        assert bool((v_dec[(v_new > 0) & finite] > 0).all()), "a positive v never decodes to 0"
        scale = ref["exp_avg_sq_scales"][0].repeat_interleave(q8.BLOCK)[:v_new.numel()]
        raised += int(((v_new > 0) & ((v_new / scale == 0) | (scale < 2.0 ** -126))).sum())  # underflow, subnormal
        div = "max_exp_avg_sqs" if amsgrad else "exp_avg_sqs"
        divided = q8.decode(ref[div][0], ref[SCALE_OF[div]][0], False)
        m_dec = q8.decode(ref["exp_avgs"][0], ref["exp_avg_scales"][0], True)
        zero_v = (divided == 0)
        assert bool((m_dec[zero_v] == 0).all()), "where v decodes to 0, m decodes to 0"
        zeroed += int((zero_v & (m_new != 0)).sum())
        if amsgrad:  # where only v is 0, m keeps its code
            v_zero = q8.decode(ref["exp_avg_sqs"][0], ref["exp_avg_sq_scales"][0], False) == 0
            kept += int((v_zero & ~zero_v & (m_dec != 0)).sum())
    assert raised > 100 and zeroed > (50 if amsgrad else 100), (raised, zeroed)  # amsgrad keeps m where vmax > 0
    assert kept > 100 or not amsgrad, kept


SCALE_OF = {"exp_avg_sqs": "exp_avg_sq_scales", "max_exp_avg_sqs": "max_exp_avg_sq_scales"}
