"""state_dtype="4bit" through the optimizer (formats/q4_blockwise.py, docs/numerics.md "4-bit
states"), built on the format registry: which tensors it applies to (the minimum size on the
whole parameter, under its new and its old name), the same bits on every backend CI runs
(odd sizes: the last byte's high nibble), checkpoints that resume bit for bit, torch AdamW's
state dicts in and out, an 8-bit checkpoint converted, a GradScaler skip, and DTensor
parameters on a 1-process mesh (2 processes: tests/optim/test_distributed.py)."""
import copy
import io

import pytest
import torch
from required import require

from adamw_tau import AdamWTau
from adamw_tau.formats import q4_blockwise as q4
from adamw_tau.formats import registry
from adamw_tau.testing.bits import differing, differing_optimizers

SLOW_TRITON = ["reference", "cpu", pytest.param("triton", marks=pytest.mark.slow)]
SIZES = [4097, 4096, 300, 4095, 2 * 128 + 1]  # 300, 4095 and 257 below the minimum size: fp32 states
KW = dict(lr=1e-2, betas=(0.8, 0.9), tau_iters=20.0, amsgrad=True, state_dtype="4bit")
MOMENTS = registry.MOMENTS


def _params(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g).to(dtype).requires_grad_() for n in SIZES]


def _step(opt, params, t):
    for i, p in enumerate(params):
        g = torch.Generator().manual_seed(1000 * t + i)
        p.grad = (torch.randn(p.shape, generator=g) * 10.0 ** (i - 2)).to(device=p.device, dtype=p.dtype)
    opt.step()


def _run(backend, steps, dtype=torch.float32, params=None, **kw):
    ps = params if params is not None else _params(dtype)
    opt = AdamWTau(ps, backend=backend, **{**KW, **kw})
    for t in range(steps):
        _step(opt, ps, t)
    return ps, opt


def test_big_tensors_take_packed_codes_and_scales_small_ones_fp32():
    ps, opt = _run("reference", 1)
    for p in ps:
        st = opt.state[p]
        if p.numel() >= 4096:
            for key in MOMENTS:
                assert st[key + "_q4"].dtype == torch.uint8 and st[key + "_q4"].shape == ((p.numel() + 1) // 2,)
                assert st[key + "_scale"].shape == (q4.n_blocks(p.numel()),) and key not in st
                assert key + "_q8" not in st
        else:
            assert st["exp_avg"].dtype == torch.float32 and "exp_avg_q4" not in st
    # the minimum size per group, under its new name and its old one
    for name in ("min_quantized_numel", "q8_min_numel"):
        ps = _params()
        opt = AdamWTau([{"params": ps[:2], name: 4097}, {"params": ps[2:], name: 200}], backend="reference", **KW)
        _step(opt, ps, 0)
        assert ["exp_avg_q4" in opt.state[p] for p in ps] == [True, False, True, True, True]
    ps = _params()
    opt = AdamWTau(ps, backend="reference", **{**KW, "q8_min_numel": 5000})
    _step(opt, ps, 0)
    assert not any("exp_avg_q4" in opt.state[p] for p in ps)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("triton", marks=pytest.mark.slow)])
@pytest.mark.parametrize("dtype,kw", [(torch.float32, {}), (torch.bfloat16, {"master_weights": "remainder"}),
                                      (torch.bfloat16, {"stochastic_rounding": True, "maximize": True})])
def test_every_backend_gives_the_references_bits(backend, dtype, kw):
    require(backend)
    kw = {**kw, "min_quantized_numel": 200}  # odd sizes (257, 4095, 4097) take codes too
    a, oa = _run(backend, 3, dtype, **kw)
    b, ob = _run("reference", 3, dtype, **kw)
    assert differing_optimizers(a, oa, b, ob) == {}


@pytest.mark.parametrize("backend", SLOW_TRITON)
def test_a_checkpoint_resumes_bit_for_bit(backend):
    require(backend)
    straight, so = _run(backend, 5)
    first, fo = _run(backend, 2)
    buf = io.BytesIO()
    torch.save(fo.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert sd["state"][0]["exp_avg_q4"].dtype == torch.uint8 and "q8_format" not in sd["state"][0]
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
        for key in MOMENTS:
            if p.numel() >= 4096:  # encoded by the format's rules: one answer
                codes, scales = registry.Q4.encode(src[key], key)
                if key == "exp_avg":  # m's zero code where amsgrad's v decodes to 0
                    codes = registry.Q4.zero_rule(codes, *registry.Q4.encode(src["max_exp_avg_sq"], "max_exp_avg_sq"),
                                                  p.numel())
                assert torch.equal(st[key + "_q4"], codes) and differing(st[key + "_scale"], scales) == 0
            else:
                assert differing(st[key], src[key]) == 0
    out = ours.torch_state_dict()
    back = torch.optim.AdamW([p.detach().clone().requires_grad_() for p in ps], lr=1e-2, amsgrad=True)
    back.load_state_dict(out)
    for i, p in enumerate(back.param_groups[0]["params"]):
        st = back.state[p]
        assert set(st) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
        mine = ours.state[ours.param_groups[0]["params"][i]]
        for key in MOMENTS:
            want = (q4.decode(mine[key + "_q4"], mine[key + "_scale"], key == "exp_avg", p.shape) if key not in mine
                    else mine[key])
            assert st[key].dtype == torch.float32 and st[key].shape == p.shape and differing(st[key], want) == 0


def test_an_8bit_checkpoint_loads_into_4bit_and_back():
    ps, q8opt = _run("reference", 2, state_dtype="8bit")
    sd = copy.deepcopy(q8opt.state_dict())
    four = AdamWTau([p.detach().clone().requires_grad_() for p in ps], backend="reference", **KW)
    four.load_state_dict(sd)  # the group keeps its own state_dtype: the 8-bit codes decoded, then encoded
    big = four.param_groups[0]["params"][0]
    st, src = four.state[big], sd["state"][0]
    assert "exp_avg_q8" not in st and "exp_avg" not in st
    want, _ = registry.Q4.encode(registry.Q8.decode(src["exp_avg_sq_q8"], src["exp_avg_sq_scale"], "exp_avg_sq",
                                                    big.shape), "exp_avg_sq")
    assert torch.equal(st["exp_avg_sq_q4"], want)
    for t in (2, 3):  # and it steps
        _step(four, four.param_groups[0]["params"], t)


@pytest.mark.parametrize("backend", SLOW_TRITON)
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


def test_a_bad_min_size_is_refused():
    with pytest.raises(TypeError, match="min_quantized_numel"):
        AdamWTau(_params(), state_dtype="4bit", min_quantized_numel=-1)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_the_gpu_backends_through_the_optimizer_give_the_references_bits(backend):
    """Compiled Triton and the CUDA kernel on the GPU (bench/gpu_check.sh runs this), 4-bit states
    through the optimizer, odd sizes and sizes under the minimum included, against the reference
    (the list-form paths: test_8bit_states.py's GPU test covers every quantized path)."""
    ps = [p.detach().cuda().requires_grad_() for p in _params()]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    oa, ob = AdamWTau(ps, backend=backend, **KW), AdamWTau(qs, backend="reference", **KW)
    for t in range(3):
        _step(oa, ps, t)
        _step(ob, qs, t)
    assert differing_optimizers(ps, oa, qs, ob) == {}


@pytest.fixture
def mesh(tmp_path):
    """A 1-process gloo mesh: DTensor parameters in the fast tier (2 processes: test_distributed.py)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


@pytest.mark.parametrize("fmt", registry.QUANTIZED, ids=lambda f: f.name)
def test_a_sharded_parameter_keeps_sharded_codes_and_one_process_bits(mesh, fmt):
    """A Shard(0) DTensor parameter (odd size: a partial last block and byte): codes and scales
    are Shard(0) DTensors holding a plain parameter's bits, step after step; torch AdamW's state
    dict goes in and comes out the same as a plain parameter's."""
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor
    w = torch.randn(65, 129, generator=torch.Generator().manual_seed(0))
    grads = [torch.randn(65, 129, generator=torch.Generator().manual_seed(t)) for t in range(3)]
    kw = {**KW, "state_dtype": fmt.option}
    sharded = torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(0)]))
    plain = torch.nn.Parameter(w.clone())
    torch_p = torch.nn.Parameter(w.clone())
    torch_opt = torch.optim.AdamW([torch_p], lr=1e-2, amsgrad=True)
    torch_p.grad = grads[0].clone()
    torch_opt.step()
    opts = [AdamWTau([p], backend="cpu", **kw) for p in (sharded, plain)]
    for opt in opts:
        opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    for g in grads:
        sharded.grad = distribute_tensor(g.clone(), mesh, [Shard(0)])
        plain.grad = g.clone()
        for opt in opts:
            opt.step()
    got, want = opts[0].state[sharded], opts[1].state[plain]
    assert differing(sharded.full_tensor(), plain.detach()) == 0
    assert sorted(got) == sorted(want)
    for key in want:
        if key != "step":
            assert isinstance(got[key], DTensor) and differing(_full(got[key]), want[key]) == 0, key
    out, want_out = opts[0].torch_state_dict()["state"][0], opts[1].torch_state_dict()["state"][0]
    for key in MOMENTS:
        assert differing(_full(out[key]), want_out[key]) == 0, key


def test_a_parameter_not_sharded_on_dim_0_is_refused_before_any_state_is_made(mesh):
    """4-bit codes are flat bytes: a DTensor placed other than Shard(0) on a 1-d mesh has no place
    for them, and is refused with what, which parameter and what to do; opt.state stays empty."""
    from torch.distributed.tensor import Shard, distribute_tensor
    p = torch.nn.Parameter(distribute_tensor(torch.randn(64, 128), mesh, [Shard(1)]))
    opt = AdamWTau([p], state_dtype="4bit", backend="reference")
    p.grad = distribute_tensor(torch.randn(64, 128), mesh, [Shard(1)])
    before = p.detach().full_tensor().clone()
    with pytest.raises(RuntimeError, match=r"params\[0\] is a DTensor .* multiple of 128 elements") as e:
        opt.step()
    assert "Shard(dim=1)" in str(e.value) and 'state_dtype="8bit"' in str(e.value)
    assert len(opt.state) == 0 and differing(p.detach().full_tensor(), before) == 0


@pytest.mark.parametrize("fmt", registry.QUANTIZED, ids=lambda f: f.name)
def test_a_loaded_fp32_state_keeps_the_zero_rule(fmt):
    """torch AdamW's fp32 moments with v exactly 0 over a block where m is not: encoded on load,
    m decodes to 0 there (the format's zero rule), as after a step."""
    ps = _params()
    torch_opt = torch.optim.AdamW(ps, lr=1e-2, amsgrad=True)
    _step(torch_opt, ps, 0)
    sd = copy.deepcopy(torch_opt.state_dict())
    st = sd["state"][0]
    for key in ("exp_avg_sq", "max_exp_avg_sq"):
        st[key][:fmt.block] = 0.0
    st["exp_avg"][:fmt.block] = 1e-3
    ours = AdamWTau([p.detach().clone().requires_grad_() for p in ps], backend="reference",
                    **{**KW, "state_dtype": fmt.option})
    ours.load_state_dict(sd)
    p = ours.param_groups[0]["params"][0]
    mine = ours.state[p]
    m = fmt.decode(mine[fmt.key("exp_avg")], mine[fmt.scale_key("exp_avg")], "exp_avg", p.shape)
    assert bool((m[:fmt.block] == 0).all()) and bool((m[fmt.block:] != 0).any())
