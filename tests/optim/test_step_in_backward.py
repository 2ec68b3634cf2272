"""AdamWTau(step_in_backward=True): the ordinary step's bits, parameter by parameter, on a real
model (TinyGPT), and each combination a user makes with it working or refused before any write."""
import copy
import io
import pickle

import pytest
import torch
from required import require

from adamw_tau import AdamWTau
from adamw_tau.experiments.lm.tiny_gpt import TinyGPT
from adamw_tau.testing.bits import differing_optimizers

# (model dtype, options): fp32; bf16 with the exact remainder master and 8-bit states; bf16 with an
# fp32 master and amsgrad; bf16 rounded stochastically (the parameter index and step key the bits)
FORMATS = {
    "fp32": (torch.float32, {}),
    "bf16_remainder_8bit": (torch.bfloat16, dict(master_weights="remainder", state_dtype="8bit")),
    "bf16_master_amsgrad": (torch.bfloat16, dict(master_weights=True, amsgrad=True)),
    "bf16_stochastic": (torch.bfloat16, dict(stochastic_rounding=True, seed=7)),
}
STEPS = 3


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return TinyGPT(width=32, layers=1, ctx=8, head_dim=16).to(dtype)


def _batch(t):
    return torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(100 + t))


def _opt(model, in_backward, backend, bucket_numel=None, **options):
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, backend=backend, step_in_backward=in_backward,
                   **options)
    if bucket_numel is not None:
        opt._in_backward.bucket_numel = bucket_numel
    return opt


def _train(model, opt, steps=STEPS, start=0, micro=1, scheduler=None):
    for t in range(start, start + steps):
        for k in range(micro):
            loss = model.loss(_batch(10 * t + k)) / micro
            if k < micro - 1:
                with opt.accumulating():
                    loss.backward()
            else:
                loss.backward()
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()


def _pair(fmt="fp32", backend="reference", bucket_numel=None, **kw):
    dtype, options = FORMATS[fmt]
    a, b = _model(dtype), _model(dtype)
    return a, _opt(a, False, backend, **options), b, _opt(b, True, backend, bucket_numel, **options)


def _same(a, oa, b, ob):
    assert differing_optimizers(list(a.parameters()), oa, list(b.parameters()), ob) == {}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("backend", ["reference", "cpu", pytest.param("triton", marks=pytest.mark.slow)])
def test_same_bits_as_the_ordinary_step(backend, fmt):
    require(backend)
    a, oa, b, ob = _pair(fmt, backend, bucket_numel=5000)
    _train(a, oa)
    _train(b, ob)
    _same(a, oa, b, ob)
    assert all(float(ob.state[p]["step"]) == STEPS for p in b.parameters())


@pytest.mark.parametrize("bucket_numel", [0, 5000, 1 << 30], ids=["per_tensor", "buckets", "all_at_step"])
def test_bucket_size_changes_no_bit(bucket_numel):
    a, oa, b, ob = _pair("bf16_remainder_8bit", "reference", bucket_numel)
    _train(a, oa)
    _train(b, ob)
    _same(a, oa, b, ob)


def test_ready_sets_that_change_between_steps():
    """A parameter stepped by one ready set, then another, then the first again: each set's cached
    step counts would be stale by then (step_in_backward.py, the note on caches)."""
    a, oa, b, ob = _pair("fp32", bucket_numel=0)
    for t, numel in enumerate([0, 1 << 30, 0, 5000, 0]):
        ob._in_backward.bucket_numel = numel
        _train(a, oa, steps=1, start=t)
        _train(b, ob, steps=1, start=t)
    _same(a, oa, b, ob)


def test_gradients_are_freed_inside_backward():
    """Stepped and freed during backward: a hook that runs after the optimizer's sees each gradient
    gone, and the gradient bytes alive at any hook never exceed the bucket plus the newest gradient."""
    model = _model()
    opt = _opt(model, True, "reference", bucket_numel=0)
    alive, seen = [], []

    def after(p):  # registered after the optimizer's hooks: runs after them
        seen.append(p.grad is None)
        alive.append(sum(q.grad.numel() * q.grad.element_size() for q in model.parameters() if q.grad is not None))
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(after)
    model.loss(_batch(0)).backward()
    assert all(seen) and len(seen) == len(list(model.parameters()))
    assert max(alive) == 0
    # the parameters were stepped inside backward, before opt.step(): the ordinary step's values
    ordinary = _model()
    _train(ordinary, _opt(ordinary, False, "reference"), steps=1)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ordinary.parameters()))
    opt.step()


def test_peak_gradient_bytes_on_the_cpu():
    """The bytes of gradient alive at the peak of backward, counted from the live tensors: the whole
    model's with the ordinary step, at most one bucket's and one gradient with the step inside."""
    def peak(in_backward, bucket_numel=None):
        model = _model()
        opt = _opt(model, in_backward, "reference", bucket_numel)
        top = [0]

        def count(p):
            top[0] = max(top[0], sum(q.grad.numel() * 4 for q in model.parameters() if q.grad is not None))
        for p in model.parameters():  # before the optimizer's hook would be too early: count at both
            p.register_post_accumulate_grad_hook(count)
        model.loss(_batch(0)).backward()
        count(None)
        opt.step()
        return top[0], model
    ordinary, model = peak(False)
    total = sum(p.numel() * 4 for p in model.parameters())
    assert ordinary == total
    inside, model = peak(True, bucket_numel=5000)
    largest = max(p.numel() * 4 for p in model.parameters())
    assert inside <= 5000 * 4 + largest
    assert inside < total / 3


def test_gradient_accumulation():
    """Every micro-batch but the last inside opt.accumulating(): the ordinary step on the summed
    gradient, bit for bit."""
    a, oa, b, ob = _pair("bf16_remainder_8bit", bucket_numel=5000)
    _train(a, oa, micro=3)
    _train(b, ob, micro=3)
    _same(a, oa, b, ob)


def test_lr_scheduler():
    """The lr of a step is the group's lr when its backward runs: a scheduler stepped after
    opt.step() gives the ordinary bits."""
    a, oa, b, ob = _pair("fp32", bucket_numel=5000)
    _train(a, oa, steps=4, scheduler=torch.optim.lr_scheduler.LambdaLR(oa, lambda t: 1 / (1 + t)))
    _train(b, ob, steps=4, scheduler=torch.optim.lr_scheduler.LambdaLR(ob, lambda t: 1 / (1 + t)))
    _same(a, oa, b, ob)


def test_state_dicts_are_the_ordinary_optimizers_and_resume():
    a, oa, b, ob = _pair("bf16_remainder_8bit", bucket_numel=5000)
    _train(a, oa, steps=2)
    _train(b, ob, steps=2)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k in sa["state"]:
        assert sa["state"][k].keys() == sb["state"][k].keys()
        for key, v in sa["state"][k].items():
            w = sb["state"][k][key]
            assert (v.dtype == w.dtype and torch.equal(v, w)) if torch.is_tensor(v) else v == w, (k, key)
    # a fresh step-in-backward optimizer loads the ordinary one's checkpoint and goes on with its bits
    buf = io.BytesIO()
    torch.save(sa, buf)
    buf.seek(0)
    c = copy.deepcopy(a)
    oc = _opt(c, True, "reference", 5000, **FORMATS["bf16_remainder_8bit"][1])
    oc.load_state_dict(torch.load(buf, weights_only=True))
    _train(a, oa, steps=2, start=2)
    _train(c, oc, steps=2, start=2)
    _same(a, oa, c, oc)


@pytest.mark.slow
def test_pickled_optimizer_hooks_its_own_params_again():
    model = _model()
    opt = _opt(model, True, "reference", 5000)
    _train(model, opt, steps=1)
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    assert opt2._step_in_backward
    ref = copy.deepcopy(model)
    oref = _opt(ref, False, "reference")
    oref.load_state_dict(opt2.state_dict())
    _train(model2, opt2, steps=2, start=1)
    _train(ref, oref, steps=2, start=1)
    _same(ref, oref, model2, opt2)


def test_step_hooks_run_at_opt_step():
    model = _model()
    opt = _opt(model, True, "reference", 0)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    _train(model, opt, steps=2)
    assert calls == ["pre", "post"] * 2


def test_a_second_backward_before_step_is_refused_before_any_write():
    model = _model()
    opt = _opt(model, True, "reference", 0)
    model.loss(_batch(0)).backward()
    after_first = [p.detach().clone() for p in model.parameters()]
    states = [{k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"second gradient before opt.step\(\).*accumulating"):
        model.loss(_batch(1)).backward()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), after_first))
    for p, saved in zip(model.parameters(), states):
        assert all(torch.equal(v, saved[k]) for k, v in opt.state[p].items())


def test_grad_scaler_is_refused():
    model = _model()
    opt = _opt(model, True, "reference", 0)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(model.loss(_batch(0))).backward()
    with pytest.raises(RuntimeError, match="cannot be stepped by a GradScaler.*step_in_backward=False"):
        scaler.step(opt)


@pytest.mark.parametrize("bucket_numel", [0, None], ids=["per_tensor", "default_buckets"])
def test_global_norm_clipping_sees_no_gradient(bucket_numel):
    """Documented, not refusable from here: by the time clip_grad_norm_ runs, every gradient is
    gone, those of the bucket still waiting at the end of backward too (this tiny model's whole
    gradient, with the default bucket size), so the clipping changes no bit: the parameters
    already hold the ordinary step's values."""
    model = _model()
    opt = _opt(model, True, "reference", bucket_numel)
    model.loss(_batch(0)).backward()
    assert all(p.grad is None for p in model.parameters())
    assert float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)) == 0.0
    opt.step()
    ordinary = _model()
    _train(ordinary, _opt(ordinary, False, "reference"), steps=1)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ordinary.parameters()))


@pytest.mark.slow
def test_compiled_model():
    """torch.compile of the model: autograd still accumulates each gradient eagerly, so the hooks step."""
    torch._dynamo.reset()
    a, oa, b, ob = _pair("bf16_remainder_8bit", bucket_numel=5000)
    b.forward = torch.compile(b.forward, backend="aot_eager")
    _train(a, oa, steps=2)
    _train(b, ob, steps=2)
    _same(a, oa, b, ob)


def test_step_in_backward_must_be_a_bool():
    with pytest.raises(TypeError, match="step_in_backward must be True or False"):
        AdamWTau(_model().parameters(), step_in_backward=1)


@pytest.mark.cuda
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_same_bits_as_the_ordinary_step_on_the_gpu(backend, fmt):
    """The same comparison on a GPU (bench/gpu_check.sh runs the cuda-marked tests)."""
    dtype, options = FORMATS[fmt]
    models = []
    for inside in (False, True):
        model = _model(dtype).cuda()
        opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, backend=backend, step_in_backward=inside,
                       **options)
        for t in range(STEPS):
            model.loss(_batch(t).cuda()).backward()
            opt.step()
            opt.zero_grad()
        models.append((model, opt))
    (a, oa), (b, ob) = models
    _same(a, oa, b, ob)
