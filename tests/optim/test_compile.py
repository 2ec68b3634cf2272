"""torch.compile: the step traces into one graph with our ops as single nodes, and keeps the bits."""
import pytest
import torch
from torch._dynamo.utils import counters

from adamw_tau import AdamWTau
from adamw_tau.launch.backends import availability

CPU_BACKENDS = [b for b in ("cpu", "triton", "reference") if availability(b, torch.device("cpu")) is None]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _grads(model, t):
    g = torch.Generator().manual_seed(t)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("warm", [True, False], ids=["after_an_eager_step", "from_the_first_step"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_compiled_step_is_one_graph_with_the_eager_bits(backend, warm):
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
        for a, b in zip(eager_model.parameters(), compiled_model.parameters()):
            assert torch.equal(a.view(torch.int32), b.view(torch.int32)), t
    # the step count lives in a tensor: later steps reuse the graph instead of recompiling
    assert counters["stats"]["unique_graphs"] <= 2
    # back to eager after compiled steps: the host must not trust the counts it had before them
    for t in range(6, 8):
        _grads(eager_model, t)
        _grads(compiled_model, t)
        eager.step()
        compiled.step()
    for a, b in zip(eager_model.parameters(), compiled_model.parameters()):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))
        assert float(eager.state[a]["step"]) == float(compiled.state[b]["step"]) == 8


def test_compiled_training_step_breaks_only_outside_our_code():
    torch._dynamo.reset()
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=30.0, backend=CPU_BACKENDS[0])
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
