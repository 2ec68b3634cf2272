"""Training runs for test_distributed.py: one process per rank on gloo (CPU), and the same
run in a single process to compare with.

Every rank sees the same batch, so the gradient averaged across ranks (each rank's g / 2,
summed) is exactly the single-process gradient and any difference would be the optimizer's.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from adamw_tau import AdamWTau

WORLD = 2
STEPS = 6
OPTIONS = dict(lr=1e-2, tau_iters=40.0, amsgrad=True, backend="cpu")


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def batch(t):
    g = torch.Generator().manual_seed(100 + t)
    return torch.randn(10, 8, generator=g), torch.randn(10, 4, generator=g)


def train(net, opt, steps, start=0):
    for t in range(start, start + steps):
        x, y = batch(t)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()


def single_process() -> list[torch.Tensor]:
    net = model()
    train(net, AdamWTau(net.parameters(), **OPTIONS), STEPS)
    return [p.detach().clone() for p in net.parameters()]


def _init(rank: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)


def _full(p: torch.Tensor) -> torch.Tensor:
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()


def run(rank: int, engine: str, port: int, out: str) -> None:
    _init(rank, port)
    try:
        result = {"ddp": _ddp, "zero": _zero, "fsdp2": _fsdp2, "dcp": _dcp}[engine](out)
        if rank == 0:
            torch.save(result, os.path.join(out, f"{engine}.pt"))
        # [note: clean exit] every rank arrives here before any tears its group down. Without
        # this barrier gloo aborted at exit ("terminate called without an active exception",
        # SIGABRT) in 3 of 4 runs of this file, and a plain 2-process DDP in 2 of 6; with it, 0 of 6.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # With the barrier, 2 of 8 runs of this file still aborted the same way (2026-11-23, torch
    # 2.14.1): at interpreter teardown, after the result was saved. A rank that got here
    # succeeded; it leaves without the teardown. A failing rank raises above and keeps its traceback.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _ddp(out):
    net = torch.nn.parallel.DistributedDataParallel(model())
    train(net, AdamWTau(net.parameters(), **OPTIONS), STEPS)
    return [_full(p) for p in net.module.parameters()]


def _zero(out):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    net = model()
    opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=AdamWTau, **OPTIONS)
    train(net, opt, STEPS)
    return [_full(p) for p in net.parameters()]


def _sharded():
    from torch.distributed.fsdp import fully_shard
    net = model()
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(net)
    return net


def _fsdp2(out):
    net = _sharded()
    opt = AdamWTau(net.parameters(), **OPTIONS)
    train(net, opt, STEPS)
    return {"params": [_full(p) for p in net.parameters()],
            "dtensor_states": all(type(v).__name__ == "DTensor" for st in opt.state.values()
                                  for k, v in st.items() if k != "step")}


def _dcp(out):
    """Checkpoint an FSDP2 run at step k with DCP, resume in a fresh model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    k = 3
    net = _sharded()
    opt = AdamWTau(net.parameters(), **OPTIONS)
    train(net, opt, k)
    path = os.path.join(out, "dcp_checkpoint")
    dcp.save({"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)}, checkpoint_id=path)
    dist.barrier()

    resumed = _sharded()
    ropt = AdamWTau(resumed.parameters(), **OPTIONS)
    state = {"model": get_model_state_dict(resumed), "optim": get_optimizer_state_dict(resumed, ropt)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(resumed, state["model"])
    set_optimizer_state_dict(resumed, ropt, state["optim"])
    train(resumed, ropt, STEPS - k, start=k)
    steps = {float(st["step"]) for st in ropt.state.values()}
    return {"params": [_full(p) for p in resumed.parameters()], "steps": steps}
