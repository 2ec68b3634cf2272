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
from adamw_tau.launch import clipping

WORLD = 2
STEPS = 6
OPTIONS = dict(lr=1e-2, tau_iters=40.0, amsgrad=True, backend="cpu")
# a run's variant: its params' dtype and the optimizer's options ("engine:variant")
# 8-bit: the first weight (64 x 8 = 512 elements) is quantized; FSDP2 shards it at 256, a block
# boundary, so the run is the single process's (docs/numerics.md, the sharding rule); the rest
# is under q8_min_numel and keeps fp32 states
# 4-bit: the same weight, its shards of 256 elements two blocks of 128 each (tests of it: FSDP2 only)
VARIANTS = {"fp32": (torch.float32, OPTIONS),
            "remainder": (torch.bfloat16, dict(OPTIONS, master_weights="remainder")),
            "8bit": (torch.float32, dict(OPTIONS, state_dtype="8bit", q8_min_numel=512)),
            "4bit": (torch.float32, dict(OPTIONS, state_dtype="4bit", min_quantized_numel=512))}


# clipping runs: every weight's shard a whole number of norm chunks (2048 elements: the weights of
# 4096 and 12288 elements split in 2, 1 and 3 chunks a rank), so the FSDP2 norm has one process's
# bits (launch/clipping.py's note); 14 chunks, so that the order in which they are summed shows
CLIP = 0.05


def clip_model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False), torch.nn.Tanh(),
                               torch.nn.Linear(64, 192, bias=False), torch.nn.Tanh(),
                               torch.nn.Linear(192, 64, bias=False)).to(dtype)


def clip_train(net, opt, steps=STEPS) -> list[torch.Tensor]:
    """Train with clipping inside the step; each step's norm (all above CLIP: clipped), then the
    last step's chunk sums."""
    dtype = next(net.parameters()).dtype
    norms = []
    for t in range(steps):
        g = torch.Generator().manual_seed(200 + t)
        x, y = torch.randn(10, 64, generator=g).to(dtype), torch.randn(10, 64, generator=g).to(dtype)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
        norms.append(opt.grad_norm.clone())
    # the last step's chunk sums in float64: their order shows here, not in the fp32 norm
    norms.append(clipping.all_chunk_sums([p.grad for p in net.parameters()]))
    return norms


def clip_single_process(variant: str = "fp32") -> dict:
    dtype, options = VARIANTS[variant]
    net = clip_model(dtype)
    opt = AdamWTau(net.parameters(), max_grad_norm=CLIP, **options)
    norms = clip_train(net, opt)
    return {"params": [p.detach().clone() for p in net.parameters()] + _masters(opt, net), "norms": norms}


def model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)).to(dtype)


def batch(t, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + t)
    return torch.randn(10, 8, generator=g).to(dtype), torch.randn(10, 4, generator=g).to(dtype)


def train(net, opt, steps, start=0):
    dtype = next(net.parameters()).dtype
    for t in range(start, start + steps):
        x, y = batch(t, dtype)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()


def single_process(variant: str = "fp32") -> list[torch.Tensor]:
    dtype, options = VARIANTS[variant]
    net = model(dtype)
    opt = AdamWTau(net.parameters(), **options)
    train(net, opt, STEPS)
    return [p.detach().clone() for p in net.parameters()] + _masters(opt, net)


def _masters(opt, net) -> list[torch.Tensor]:
    """The remainders, 8-bit and 4-bit codes and their scales (whole tensors) a run keeps, in
    parameter order; none otherwise."""
    out = []
    for p in net.parameters():
        for key in ("master_remainder", "exp_avg_q8", "exp_avg_sq_q8", "exp_avg_q4", "exp_avg_sq_q4",
                    "max_exp_avg_sq_q4", "exp_avg_scale", "exp_avg_sq_scale"):
            t = opt.state[p].get(key)
            if t is not None and (t.dtype in (torch.int16, torch.uint8) or key.endswith("_scale")):
                out.append(_full(t))
    return out


def _init(rank: int, rendezvous: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)


def _full(p: torch.Tensor) -> torch.Tensor:
    if not hasattr(p, "full_tensor"):
        return p.detach().clone()
    if p.dtype in (torch.int16, torch.uint8):  # gloo gathers neither: gather int32 (exact) and narrow back
        return p.detach().to(torch.int32).full_tensor().to(p.dtype)
    return p.detach().full_tensor().clone()


def run(rank: int, engine: str, rendezvous: str, out: str) -> None:
    _init(rank, rendezvous)
    try:
        name, variant = engine.split(":")
        engines = {"ddp": _ddp, "zero": _zero, "fsdp2": _fsdp2, "dcp": _dcp, "ddp_in_backward": _ddp_in_backward,
                   "fsdp2_in_backward": _fsdp2_in_backward, "ddp_unregistered": _ddp_unregistered,
                   "ddp_clip": _ddp_clip, "fsdp2_clip": _fsdp2_clip, "fsdp2_uneven": _fsdp2_uneven,
                   "dcp_from_torch": _dcp_from_torch}
        result = engines[name](out, *VARIANTS[variant])
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


def _ddp(out, dtype, options):
    net = torch.nn.parallel.DistributedDataParallel(model(dtype))
    opt = AdamWTau(net.parameters(), **options)
    train(net, opt, STEPS)
    return [_full(p) for p in net.module.parameters()] + _masters(opt, net.module)


def _ddp_in_backward(out, dtype, options):
    """step_in_backward: each DDP bucket stepped after its all-reduce (opt.register_ddp)."""
    net = torch.nn.parallel.DistributedDataParallel(model(dtype), bucket_cap_mb=0.001)  # several buckets
    opt = AdamWTau(net.parameters(), step_in_backward=True, **options)
    opt.register_ddp(net)
    train(net, opt, STEPS)
    return [_full(p) for p in net.module.parameters()] + _masters(opt, net.module)


def _ddp_unregistered(out, dtype, options):
    """step_in_backward under DDP without register_ddp: refused before any write."""
    net = torch.nn.parallel.DistributedDataParallel(model(dtype))
    opt = AdamWTau(net.parameters(), step_in_backward=True, **options)
    before = [p.detach().clone() for p in net.parameters()]
    x, y = batch(0, dtype)
    try:
        ((net(x) - y) ** 2).mean().backward()
    except RuntimeError as e:
        message = str(e)
    else:
        message = None
    return {"message": message, "unchanged": all(torch.equal(a, b) for a, b in zip(before, net.parameters()))}


def _fsdp2_in_backward(out, dtype, options):
    """step_in_backward: FSDP2 calls the hooks after the reduce-scatter, on the sharded parameters."""
    net = _sharded(dtype)
    opt = AdamWTau(net.parameters(), step_in_backward=True, **options)
    train(net, opt, STEPS)
    return [_full(p) for p in net.parameters()] + _masters(opt, net)


def _zero(out, dtype, options):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    net = model(dtype)
    opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=AdamWTau, **options)
    train(net, opt, STEPS)
    return [_full(p) for p in net.parameters()]  # each rank's optimizer holds only its own params' states


def _ddp_clip(out, dtype, options):
    """DDP: replicated gradients, each rank's norm is the local one."""
    net = torch.nn.parallel.DistributedDataParallel(clip_model(dtype))
    opt = AdamWTau(net.parameters(), max_grad_norm=CLIP, **options)
    norms = clip_train(net, opt)
    return {"params": [_full(p) for p in net.module.parameters()] + _masters(opt, net.module), "norms": norms}


def _fsdp2_clip(out, dtype, options):
    """FSDP2: each rank's chunk sums gathered, in rank order; every rank gets the same norm."""
    net = _sharded(dtype, clip_model)
    opt = AdamWTau(net.parameters(), max_grad_norm=CLIP, **options)
    norms = clip_train(net, opt)
    gathered = [torch.zeros(len(norms) - 1) for _ in range(WORLD)]
    dist.all_gather(gathered, torch.stack(norms[:-1]))
    return {"params": [_full(p) for p in net.parameters()] + _masters(opt, net), "norms": norms,
            "ranks_agree": all(torch.equal(gathered[0], g) for g in gathered)}


def _sharded(dtype, build=None):
    from torch.distributed.fsdp import fully_shard
    net = (build or model)(dtype)
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(net)
    return net


def _fsdp2(out, dtype, options):
    net = _sharded(dtype)
    opt = AdamWTau(net.parameters(), **options)
    train(net, opt, STEPS)
    return {"params": [_full(p) for p in net.parameters()] + _masters(opt, net),
            "dtensor_states": all(type(v).__name__ == "DTensor" for st in opt.state.values()
                                  for k, v in st.items() if k != "step")}


def _fsdp2_uneven(out, dtype, options):
    """A 4-bit weight whose shards are not whole blocks (Linear(8, 66): 264 elements a rank, not a
    multiple of 128): refused at the first step, before any state is made or any param written."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 66), torch.nn.Tanh(), torch.nn.Linear(66, 4)).to(dtype)
    net = _sharded(dtype, lambda d: net)
    opt = AdamWTau(net.parameters(), **options)
    before = [_full(p) for p in net.parameters()]
    x, y = batch(0, dtype)
    ((net(x) - y) ** 2).mean().backward()
    try:
        opt.step()
    except RuntimeError as e:
        message = str(e)
    else:
        message = None
    return {"message": message, "states": len(opt.state),
            "unchanged": all(torch.equal(a, _full(b)) for a, b in zip(before, net.parameters()))}


# torch AdamW's checkpoint into AdamWTau: its hyperparameters (no τ: λ as torch's) on both sides
FROM_TORCH = dict(lr=1e-2, weight_decay=0.01, amsgrad=True)
FROM_TORCH_STEPS = 3


def from_torch_single_process(variant: str) -> list[torch.Tensor]:
    """torch AdamW for 3 steps, its state dict loaded into AdamWTau (encoded), 3 steps more."""
    dtype, options = VARIANTS[variant]
    net = model(dtype)
    topt = torch.optim.AdamW(net.parameters(), **FROM_TORCH)
    train(net, topt, FROM_TORCH_STEPS)
    opt = AdamWTau(net.parameters(), **_from_torch_options(options))
    opt.load_state_dict(topt.state_dict())
    loaded = _masters(opt, net)
    train(net, opt, FROM_TORCH_STEPS, start=FROM_TORCH_STEPS)
    return loaded + [p.detach().clone() for p in net.parameters()] + _masters(opt, net)


def _from_torch_options(options):
    return {**{k: v for k, v in options.items() if k not in ("lr", "tau_iters")}, **FROM_TORCH}


def _dcp_from_torch(out, dtype, options):
    """An FSDP2 torch AdamW checkpoint (flattened, DCP) loaded into an FSDP2 AdamWTau through
    GroupKeysLoadPlanner: its fp32 moments are read into temporaries sharded as the params and
    encoded shard by shard."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict, set_model_state_dict,
                                                         set_optimizer_state_dict)

    from adamw_tau.integrations.dcp import GroupKeysLoadPlanner
    flat = StateDictOptions(flatten_optimizer_state_dict=True)
    net = _sharded(dtype)
    topt = torch.optim.AdamW(net.parameters(), **FROM_TORCH)
    train(net, topt, FROM_TORCH_STEPS)
    path = os.path.join(out, "dcp_torch_checkpoint")
    dcp.save({"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, topt, options=flat)},
             checkpoint_id=path)
    dist.barrier()
    resumed = _sharded(dtype)
    ropt = AdamWTau(resumed.parameters(), **_from_torch_options(options))
    state = {"model": get_model_state_dict(resumed), "optim": get_optimizer_state_dict(resumed, ropt, options=flat)}
    dcp.load(state, checkpoint_id=path, planner=GroupKeysLoadPlanner())
    set_model_state_dict(resumed, state["model"])
    set_optimizer_state_dict(resumed, ropt, state["optim"], options=flat)
    loaded = _masters(ropt, resumed)
    train(resumed, ropt, FROM_TORCH_STEPS, start=FROM_TORCH_STEPS)
    return loaded + [_full(p) for p in resumed.parameters()] + _masters(ropt, resumed)


def _dcp(out, dtype, options):
    """Checkpoint an FSDP2 run at step k with DCP, resume in a fresh model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    k = 3
    net = _sharded(dtype)
    opt = AdamWTau(net.parameters(), **options)
    train(net, opt, k)
    path = os.path.join(out, "dcp_checkpoint")
    dcp.save({"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)}, checkpoint_id=path)
    dist.barrier()

    resumed = _sharded(dtype)
    ropt = AdamWTau(resumed.parameters(), **options)
    state = {"model": get_model_state_dict(resumed), "optim": get_optimizer_state_dict(resumed, ropt)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(resumed, state["model"])
    set_optimizer_state_dict(resumed, ropt, state["optim"])
    train(resumed, ropt, STEPS - k, start=k)
    steps = {float(st["step"]) for st in ropt.state.values()}
    return {"params": [_full(p) for p in resumed.parameters()] + _masters(ropt, resumed), "steps": steps}
