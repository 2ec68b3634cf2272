"""torch.compile: the step traces into one graph with our ops as single nodes, and keeps the bits."""
import pytest
from tiers import tiered
import torch
from required import require
from torch._dynamo.utils import counters

from adamw_tau import AdamWTau
from adamw_tau.formats import registry
from adamw_tau.testing.bits import differing_optimizers

CPU_BACKENDS = ["cpu", "triton", "reference"]  # each must run in CI (required.require)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _grads(model, t):
    g = torch.Generator().manual_seed(t)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("warm", [True, False], ids=["after_an_eager_step", "from_the_first_step"])
@pytest.mark.parametrize("backend", tiered([(b,) for b in CPU_BACKENDS], [("cpu",)]))  # triton 7 s, reference 12 CPU s
def test_compiled_step_is_one_graph_with_the_eager_bits(backend, warm):
    require(backend)
    torch._dynamo.reset()
    counters.clear()
    eager_model, compiled_model = _model(), _model()
    kw = dict(lr=1e-2, tau_iters=30.0, amsgrad=True, backend=backend)
    eager, compiled = AdamWTau(eager_model.parameters(), **kw), AdamWTau(compiled_model.parameters(), **kw)
    step = torch.compile(compiled.step, backend="aot_eager", fullgraph=True)  # fullgraph: a break raises
    for t in range(6):
        _grads(eager_model, t)
        _grads(compiled_model, t)
        eager.step()
        if t == 0 and warm:
            compiled.step()
        else:
            step()
        assert differing_optimizers(list(eager_model.parameters()), eager,
                                    list(compiled_model.parameters()), compiled) == {}, t
    # the step count lives in a tensor: later steps reuse the graph instead of recompiling
    assert counters["stats"]["unique_graphs"] <= 2
    # back to eager after compiled steps: the host must not trust the counts it had before them
    for t in range(6, 8):
        _grads(eager_model, t)
        _grads(compiled_model, t)
        eager.step()
        compiled.step()
    assert differing_optimizers(list(eager_model.parameters()), eager, list(compiled_model.parameters()),
                                compiled) == {}
    for a in eager_model.parameters():
        assert float(eager.state[a]["step"]) == 8


def test_compiled_training_step_breaks_only_outside_our_code():
    require("cpu")
    torch._dynamo.reset()
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=30.0, backend="cpu")
    x, y = torch.randn(6, 5), torch.randn(6, 3)

    def train_step():
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()

    train_step()
    explained = torch._dynamo.explain(train_step)()
    ours = [r for r in explained.break_reasons
            if any("adamw_tau" in str(frame.filename) for frame in r.user_stack)]
    assert ours == [], [r.reason for r in ours]
    assert explained.graph_count >= 1


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_compiled_graph_holds_our_op_as_one_node(backend):
    """The graph torch.compile captures holds adamw_tau::adamw_step_ once per bucket (here two:
    an fp32 and a bf16-with-master group), and none of the update decomposed: no sqrt, no max
    (the divisions left build the step's scalars on the device)."""
    require(backend)
    torch._dynamo.reset()
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model = _model()
    half = torch.nn.Parameter(torch.randn(9).bfloat16())
    opt = AdamWTau([{"params": model.parameters()}, {"params": [half], "master_weights": True}], lr=1e-2,
                   tau_iters=30.0, amsgrad=True, backend=backend)
    _grads(model, 0)
    half.grad = torch.randn(9).bfloat16()
    torch.compile(opt.step, backend=record, fullgraph=True)()
    assert len(graphs) == 1
    targets = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    ours = [t for t in targets if t in (torch.ops.adamw_tau.adamw_step_, torch.ops.adamw_tau.adamw_step_.default)]
    assert len(ours) == 2, targets
    assert not [t for t in targets if "sqrt" in str(t) or "maximum" in str(t)], targets


def _quantized_model(device="cpu"):
    """Tensors of 660, 33, 99 and 3 elements: several blocks of 128 and 256, partial last blocks,
    odd counts (a 4-bit tensor's last byte half used)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 33), torch.nn.Tanh(), torch.nn.Linear(33, 3)).to(device)


def _check_compiled_quantized_step(backend, fmt, device):
    torch._dynamo.reset()
    eager_model, compiled_model = _quantized_model(device), _quantized_model(device)
    kw = dict(lr=1e-2, tau_iters=30.0, amsgrad=True, backend=backend, state_dtype=fmt.option, min_quantized_numel=0)
    eager, compiled = AdamWTau(eager_model.parameters(), **kw), AdamWTau(compiled_model.parameters(), **kw)
    step = torch.compile(compiled.step, backend="aot_eager", fullgraph=True)
    for t in range(4):
        for model in (eager_model, compiled_model):
            g = torch.Generator().manual_seed(t)
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g).to(device)
        eager.step()
        compiled.step() if t == 0 else step()
        assert differing_optimizers(list(eager_model.parameters()), eager,
                                    list(compiled_model.parameters()), compiled) == {}, t
    state = compiled.state[next(compiled_model.parameters())]
    assert state[fmt.key("exp_avg")].dtype == torch.uint8 and fmt.scale_key("exp_avg") in state


# triton 23, reference 14 CPU s (8-bit); the 4-bit ones alike
@pytest.mark.parametrize("backend,fmt", tiered([(b, f) for b in CPU_BACKENDS for f in registry.QUANTIZED],
                                               [("cpu", registry.Q8), ("cpu", registry.Q4)]),
                         ids=lambda v: getattr(v, "name", v))
def test_compiled_quantized_step_keeps_the_eager_bits(backend, fmt):
    """state_dtype="8bit" and "4bit" (every tensor, min_quantized_numel=0): the codes and scales
    ride in the op's lists, and a compiled step has the eager step's bits."""
    require(backend)
    _check_compiled_quantized_step(backend, fmt, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("fmt", registry.QUANTIZED, ids=lambda f: f.name)
def test_compiled_quantized_step_on_the_gpu_keeps_the_eager_bits(backend, fmt):
    """The same on the GPU (bench/gpu_check.sh runs it)."""
    _check_compiled_quantized_step(backend, fmt, "cuda")


def test_compiled_step_with_clipping_is_one_graph_with_the_eager_bits():
    """max_grad_norm: the norm, the coefficient and the skip flag trace into the same graph."""
    require("cpu")
    torch._dynamo.reset()
    eager_model, compiled_model = _model(), _model()
    kw = dict(lr=1e-2, tau_iters=30.0, backend="cpu", max_grad_norm=0.5)
    eager, compiled = AdamWTau(eager_model.parameters(), **kw), AdamWTau(compiled_model.parameters(), **kw)
    step = torch.compile(compiled.step, backend="aot_eager", fullgraph=True)
    for t in range(4):
        _grads(eager_model, t)
        _grads(compiled_model, t)
        eager.step()
        step()
        assert torch.equal(eager.grad_norm, compiled.grad_norm) and float(eager.grad_norm) > 0.5
        assert differing_optimizers(list(eager_model.parameters()), eager,
                                    list(compiled_model.parameters()), compiled) == {}, t
