"""CUDA graphs and the optimizer's caches (cuda-marked: bench/gpu_check.sh runs them).

The host logic behind each (the capture checks) is tested on the CPU in test_state_bookkeeping.py."""
import pytest
import torch

from adamw_tau import AdamWTau

pytestmark = pytest.mark.cuda
BACKENDS = ["triton", "cuda"]


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g).cuda().requires_grad_() for n in (33, 4096, 7)]


def _grads(params, t):
    g = torch.Generator().manual_seed(t)
    return [torch.randn(p.shape, generator=g).cuda() for p in params]


def _warm_up(opt, params, steps=2):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for t in range(steps):
            for p, g in zip(params, _grads(params, t)):
                p.grad = g
            opt.step()
    torch.cuda.current_stream().wait_stream(side)


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_of_a_host_counted_step_is_refused(backend):
    ps = _params()
    opt = AdamWTau(ps, lr=1e-2, tau_iters=30.0, backend=backend)
    _warm_up(opt, ps)
    before = [p.detach().clone() for p in ps]
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="capturable is False"):
        with torch.cuda.graph(graph):
            opt.step()
    torch.cuda.synchronize()
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(ps, before))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_first_step_inside_a_capture_says_to_warm_up(backend):
    ps = _params()
    for p, g in zip(ps, _grads(ps, 0)):
        p.grad = g
    opt = AdamWTau(ps, lr=1e-2, tau_iters=30.0, backend=backend, capturable=True)
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="warm-up"):
        with torch.cuda.graph(graph):
            opt.step()


@pytest.mark.parametrize("backend", BACKENDS)
def test_replays_after_an_eager_rebuild_still_read_their_tables(backend):
    """An eager step with new gradient tensors rebuilds the tables; the graph captured before
    still replays the step it captured, bit for bit as eager."""
    ps, qs = _params(), _params()
    kw = dict(lr=1e-2, tau_iters=30.0, backend=backend, capturable=True)
    graphed, eager = AdamWTau(ps, **kw), AdamWTau(qs, **kw)
    static = [torch.zeros_like(p) for p in ps]
    for p, g in zip(ps, static):
        p.grad = g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for t in range(2):
            for g, v in zip(static, _grads(ps, t)):
                g.copy_(v)
            graphed.step()
    torch.cuda.current_stream().wait_stream(side)
    for t in range(2):
        for q, v in zip(qs, _grads(qs, t)):
            q.grad = v
        eager.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.step()
    # an eager step with new gradient tensors: new tables for ps
    for p, v in zip(ps, _grads(ps, 2)):
        p.grad = v
    graphed.step()
    for q, v in zip(qs, _grads(qs, 2)):
        q.grad = v
    eager.step()
    torch.cuda.empty_cache()
    junk = [torch.full((1 << 16,), -1, dtype=torch.int64, device="cuda") for _ in range(8)]  # reuse freed blocks
    for p, g in zip(ps, static):
        p.grad = g
    for t in range(3, 6):
        for g, v in zip(static, _grads(ps, t)):
            g.copy_(v)
        graph.replay()
        for q, v in zip(qs, _grads(qs, t)):
            q.grad = v
        eager.step()
    torch.cuda.synchronize()
    del junk
    for p, q in zip(ps, qs):
        assert torch.equal(p.view(torch.int32), q.view(torch.int32))
