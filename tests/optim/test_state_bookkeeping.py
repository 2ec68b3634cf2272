"""opt.state is the one truth: whatever a user may do to torch AdamW's state, AdamWTau does
what torch AdamW does with it (with our bits), or raises before any write.

Each expectation is built another way than the path under test: the same parameters stepped
by separate optimizers, or a state dict edited and loaded into a new one."""
import copy
import io
import pickle
from collections import defaultdict

import pytest
import torch

from adamw_tau import AdamWTau
from adamw_tau.launch import tables
from adamw_tau.launch.backends import availability
from adamw_tau.optim.step_plan import check_capture

BACKENDS = ["cpu", "reference"]
KW = dict(lr=1e-2, betas=(0.8, 0.9), tau_iters=20.0, amsgrad=True)


@pytest.fixture(autouse=True)
def _cpu_backend_is_built():
    assert availability("cpu", torch.device("cpu")) is None, "the C++ extension must build here"


def _params(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5 + i, generator=g).requires_grad_() for i in range(n)]


def _grad(p, t, i):
    g = torch.Generator().manual_seed(1000 * t + i)
    p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def _step(opt, params, t, ids=None):
    for i, p in zip(ids or range(len(params)), params):
        _grad(p, t, i)
    opt.step()


def _words(t):
    t = t.detach()
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(_words(a), _words(b))


def _same_state(sa, sb):
    assert set(sa) == set(sb)
    for k in sa:
        _same(sa[k], sb[k])


def _clone(params):
    return [p.detach().clone().requires_grad_() for p in params]


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cleared_state_of_any_parameter_starts_again_as_in_torch(backend, capturable):
    ps = _params()
    opt = AdamWTau(ps, backend=backend, capturable=capturable, **KW)
    _step(opt, ps, 0)
    _step(opt, ps, 1)
    opt.state[ps[1]].clear()  # not the bucket's first parameter
    _step(opt, ps, 2)
    # the expectation: p0 stepped three times alone; p1 twice, then once by a new optimizer
    a, b = _clone(_params())
    oa = AdamWTau([a], backend=backend, capturable=capturable, **KW)
    for t in range(3):
        _step(oa, [a], t, [0])
    ob = AdamWTau([b], backend=backend, capturable=capturable, **KW)
    for t in range(2):
        _step(ob, [b], t, [1])
    ob2 = AdamWTau([b], backend=backend, capturable=capturable, **KW)
    _step(ob2, [b], 2, [1])
    _same(ps[0], a)
    _same(ps[1], b)
    _same_state(opt.state[ps[0]], oa.state[a])
    _same_state(opt.state[ps[1]], ob2.state[b])
    assert float(opt.state[ps[1]]["step"]) == 1.0
    saved = opt.state_dict()["state"]
    assert set(saved) == {0, 1} and float(saved[1]["step"]) == 1.0


@pytest.mark.parametrize("how", ["clear_all", "del", "new_plain_dict", "pop"])
def test_every_way_to_drop_a_state_restarts_it(how):
    ps = _params()
    opt = AdamWTau(ps, backend="cpu", **KW)
    _step(opt, ps, 0)
    if how == "clear_all":
        opt.state.clear()
    elif how == "del":
        del opt.state[ps[1]]
    elif how == "new_plain_dict":
        opt.state[ps[1]] = {}
    else:
        opt.state[ps[1]].pop("exp_avg")
        opt.state[ps[1]].pop("exp_avg_sq")
        opt.state[ps[1]].pop("max_exp_avg_sq")
        opt.state[ps[1]].pop("step")
    _step(opt, ps, 1)
    assert float(opt.state[ps[1]]["step"]) == 1.0
    assert float(opt.state[ps[0]]["step"]) == (1.0 if how == "clear_all" else 2.0)


def test_a_plain_dict_the_user_still_holds_is_watched():
    ps = _params()
    opt = AdamWTau(ps, backend="cpu", **KW)
    _step(opt, ps, 0)
    mine = dict(opt.state[ps[1]])  # a plain dict, assigned: torch keeps the very object
    opt.state[ps[1]] = mine
    _step(opt, ps, 1)
    assert opt.state[ps[1]] is mine and float(mine["step"]) == 2.0
    mine.clear()  # through the user's own reference
    _step(opt, ps, 2)
    assert float(opt.state[ps[1]]["step"]) == 1.0


def test_replacing_opt_state_itself_restarts_every_parameter():
    ps = _params()
    opt = AdamWTau(ps, backend="cpu", **KW)
    _step(opt, ps, 0)
    opt.state = defaultdict(dict)
    _step(opt, ps, 1)
    assert [float(opt.state[p]["step"]) for p in ps] == [1.0, 1.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_replaced_state_tensor_is_the_one_stepped(backend):
    ps = _params()
    opt = AdamWTau(ps, backend=backend, **KW)
    _step(opt, ps, 0)
    _step(opt, ps, 1)
    sd = copy.deepcopy(opt.state_dict())
    new = torch.zeros(6)
    opt.state[ps[1]]["exp_avg"] = new
    _step(opt, ps, 2)
    assert opt.state[ps[1]]["exp_avg"] is new  # stepped where it lies, as torch does
    # the expectation: the same edit through a state dict loaded into a new optimizer
    r = _clone(_params())
    ro = AdamWTau(r, backend=backend, **KW)
    _step(ro, r, 0)
    _step(ro, r, 1)
    sd["state"][1]["exp_avg"] = torch.zeros(6)
    ro2 = AdamWTau(r, backend=backend, **KW)
    ro2.load_state_dict(sd)
    _step(ro2, r, 2)
    for p, q in zip(ps, r):
        _same(p, q)
        _same_state(opt.state[p], ro2.state[q])


def test_a_state_tensor_of_another_dtype_is_refused_before_any_write():
    ps = _params()
    opt = AdamWTau(ps, backend="cpu", **KW)
    _step(opt, ps, 0)
    opt.state[ps[1]]["exp_avg"] = torch.zeros(6, dtype=torch.float64)
    before = [p.detach().clone() for p in ps]
    with pytest.raises(RuntimeError, match="params\\[1\\]: its state 'exp_avg' is torch.float64"):
        _step(opt, ps, 1)
    for p, b in zip(ps, before):
        _same(p, b)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_written_in_place_is_the_step_used(backend, which):
    ps = _params()
    opt = AdamWTau(ps, backend=backend, **KW)
    _step(opt, ps, 0)
    _step(opt, ps, 1)
    sd = copy.deepcopy(opt.state_dict())
    opt.state[ps[which]]["step"].fill_(100)  # torch AdamW reads it at the next step
    _step(opt, ps, 2)
    assert float(opt.state[ps[which]]["step"]) == 101.0
    assert float(opt.state[ps[1 - which]]["step"]) == 3.0
    r = _clone(_params())
    ro = AdamWTau(r, backend=backend, **KW)
    _step(ro, r, 0)
    _step(ro, r, 1)
    sd["state"][which]["step"] = torch.tensor(100.0)
    ro2 = AdamWTau(r, backend=backend, **KW)
    ro2.load_state_dict(sd)
    _step(ro2, r, 2)
    for p, q in zip(ps, r):
        _same(p, q)
    for p, q in zip(ps, r):
        _same_state(opt.state[p], ro2.state[q])


def test_a_fractional_step_is_refused_before_any_write():
    ps = _params()
    opt = AdamWTau(ps, backend="cpu", **KW)
    _step(opt, ps, 0)
    opt.state[ps[0]]["step"].fill_(2.5)
    before = [p.detach().clone() for p in ps]
    with pytest.raises(ValueError, match="whole steps"):
        _step(opt, ps, 1)
    for p, b in zip(ps, before):
        _same(p, b)


def _roundtrip_copy(opt, how):
    if how == "deepcopy":
        return copy.deepcopy(opt)
    if how == "pickle":
        return pickle.loads(pickle.dumps(opt))
    buf = io.BytesIO()
    torch.save(opt, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_a_copied_optimizer_steps_on_with_the_same_bits(how):
    ps = [p.detach().bfloat16().requires_grad_() for p in _params()]
    opt = AdamWTau(ps, backend="cpu", stochastic_rounding=True, seed=12345, state_dtype=torch.float32, **KW)
    _step(opt, ps, 0)
    twin = _roundtrip_copy(opt, how)
    tps = [p for g in twin.param_groups for p in g["params"]]
    for t in (1, 2):
        _step(opt, ps, t)
        _step(twin, tps, t)
    for p, q in zip(ps, tps):
        _same(p, q)
        _same_state(opt.state[p], twin.state[q])
    assert twin.backend_for("cpu") == "cpu"


def test_state_dict_is_plain_and_loads_with_weights_only():
    ps = _params()
    opt = AdamWTau(ps, backend="cpu", **KW)
    _step(opt, ps, 0)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert all(type(s) is dict for s in sd["state"].values())


@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16])
def test_a_master_weights_checkpoint_resumes_with_its_dtypes_and_bits(state_dtype):
    """torch's load casts states to the param's dtype: an fp32 master of a bf16 param would
    be rounded to bf16."""
    def make():
        return [p.detach().bfloat16().requires_grad_() for p in _params()]
    straight = make()
    so = AdamWTau(straight, backend="cpu", master_weights=True, state_dtype=state_dtype, **KW)
    for t in range(4):
        _step(so, straight, t)
    first = make()
    fo = AdamWTau(first, backend="cpu", master_weights=True, state_dtype=state_dtype, **KW)
    for t in range(2):
        _step(fo, first, t)
    sd = copy.deepcopy(fo.state_dict())
    resumed = [p.detach().clone().requires_grad_() for p in first]
    ro = AdamWTau(resumed, backend="cpu", master_weights=True, state_dtype=state_dtype, **KW)
    ro.load_state_dict(sd)
    assert ro.state[resumed[0]]["master_param"].dtype == torch.float32
    for t in (2, 3):
        _step(ro, resumed, t)
    for p, q in zip(straight, resumed):
        _same(p, q)
        _same_state(so.state[p], ro.state[q])


@pytest.mark.parametrize("seed", [2 ** 63, -1, True, 1.0, "7"])
def test_a_seed_outside_int64_or_not_an_int_is_refused(seed):
    with pytest.raises((TypeError, ValueError), match="seed"):
        AdamWTau(_params(), seed=seed)


def test_the_largest_seed_gives_the_same_bits_on_every_backend():
    outs = []
    for backend in BACKENDS:
        ps = [p.detach().bfloat16().requires_grad_() for p in _params()]
        opt = AdamWTau(ps, backend=backend, stochastic_rounding=True, seed=2 ** 63 - 1, **KW)
        _step(opt, ps, 0)
        outs.append(ps)
    for p, q in zip(*outs):
        _same(p, q)


class _Bucket:
    def __init__(self, on_device, group=0):
        self.device, self.on_device, self.group = torch.device("cuda", 0), on_device, group


def test_capture_of_a_host_counted_step_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="capturable is False"):
        check_capture([(_Bucket(on_device=False), ["t"])], [])
    keep = []
    check_capture([(_Bucket(on_device=True), ["t1", "t2"])], keep)
    assert keep == ["t1", "t2"]  # the captured step's tables outlive any rebuild


def test_no_capture_no_cost(monkeypatch):
    def boom():
        raise AssertionError("asked about capture for CPU buckets")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", boom)
    b = _Bucket(on_device=False)
    b.device = torch.device("cpu")
    check_capture([(b, ["t"])], [])


def test_tables_are_never_built_inside_a_capture(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    import numpy as np
    with pytest.raises(RuntimeError, match="warm-up"):
        tables._to_device(np.zeros((1, 2), dtype=np.int64), torch.device("cuda", 0))
