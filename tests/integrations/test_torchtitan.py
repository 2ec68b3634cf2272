"""torchtitan's optimizer container with AdamWTau (the recipe in docs/integrations.md): its
groups, its lr=0 state creation, and DCP save/load of its flat state dict, bitwise; the step inside
backward through the container, bitwise the ordinary step, and what torchtitan's own clipping and
accumulation do with it."""
import types

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from adamw_tau import AdamWTau
from adamw_tau.integrations.dcp import GroupKeysLoadPlanner
from frameworks import bits, freed_in_backward, launch_per_tensor, need, optimizer_tensors, run_recipe  # noqa: F401

need("torchtitan")
from torchtitan.components.optimizer import OptimizersContainer as TitanContainer  # noqa: E402
from torchtitan.components.optimizer import ParamGroupConfig  # noqa: E402

from adamw_tau.integrations.torchtitan import OptimizersContainer  # noqa: E402


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 12)
        self.norm = torch.nn.LayerNorm(12)
        self.out = torch.nn.Linear(12, 3)

    def forward(self, x):
        return self.out(self.norm(self.proj(x)))


def _block_seeded(seed):
    torch.manual_seed(seed)
    return _Block()


def _model():
    return _block_seeded(0)


def _container(model):
    return run_recipe("torchtitan", model=model)["optimizers"]


def _train(model, opts, steps, start=0):
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(t)
        opts.zero_grad()
        ((model(torch.randn(5, 6, generator=g)) - torch.randn(5, 3, generator=g)) ** 2).mean().backward()
        opts.step()


def _same(a, b):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(bits(p), bits(q)), n


def test_container_builds_adamwtau_groups_with_torchtitans_switches():
    model = _model()
    opts = _container(model)
    assert type(opts).__name__ == "OptimizersContainer" and len(opts.optimizers) == 1
    opt = opts.optimizers[0]
    assert isinstance(opt, AdamWTau)
    groups = {g["decay"]: set(g["param_names"]) for g in opt.param_groups}
    assert groups == {"none": {"proj.bias", "norm.weight", "norm.bias", "out.bias"},
                      "tau": {"proj.weight", "out.weight"}}
    assert all(g["fused"] is True and g["foreach"] is False for g in opt.param_groups)


def test_first_state_dict_runs_the_lr0_step_and_changes_no_bit():
    model = _model()
    opts = _container(model)
    before = [bits(p) for p in model.parameters()]
    sd = opts.state_dict()  # torchtitan's init_optim_state: zero grads, lr = 0, one step
    assert "state.proj.weight.exp_avg" in sd and sd["state.proj.weight.step"].item() == 1
    assert all(torch.equal(b, bits(p)) for b, p in zip(before, model.parameters()))
    assert all(g["lr"] == 3e-4 for g in opts.optimizers[0].param_groups)


def test_dcp_save_and_load_resume_bitwise(tmp_path):
    straight = _model()
    s_opts = _container(straight)
    _train(straight, s_opts, 6)

    first = _model()
    f_opts = _container(first)
    _train(first, f_opts, 3)
    dcp.save({"model": first.state_dict(), "optimizer": f_opts}, checkpoint_id=str(tmp_path / "step3"))
    resumed = _block_seeded(7)
    r_opts = _container(resumed)
    state = {"model": resumed.state_dict(), "optimizer": r_opts}
    dcp.load(state, checkpoint_id=str(tmp_path / "step3"))
    resumed.load_state_dict(state["model"])
    _train(resumed, r_opts, 3, start=3)
    _same(straight, resumed)
    want, got = optimizer_tensors(s_opts.optimizers[0]), optimizer_tensors(r_opts.optimizers[0])
    assert want.keys() == got.keys() and all(torch.equal(bits(want[k]), bits(got[k])) for k in want)


def test_torchtitan_adamw_checkpoint_into_adamwtau(tmp_path):
    kwargs = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8}
    groups = lambda name, decay: [  # noqa: E731
        ParamGroupConfig(pattern=r"(\.bias|norm\.weight)$", optimizer_name=name,
                         optimizer_kwargs={**kwargs, "weight_decay": 0.0}),
        ParamGroupConfig(pattern=r".*", optimizer_name=name, optimizer_kwargs={**kwargs, "weight_decay": decay})]
    model = _model()
    adamw = TitanContainer.Config(param_groups=groups("AdamW", 0.1), implementation="for-loop").build(
        model_parts=[model])
    _train(model, adamw, 3)
    dcp.save({"optimizer": adamw}, checkpoint_id=str(tmp_path / "adamw"))

    via_dcp, via_sd = _block_seeded(1), _block_seeded(2)
    via_dcp.load_state_dict(model.state_dict())
    via_sd.load_state_dict(model.state_dict())
    ours = OptimizersContainer.Config(param_groups=groups("AdamWTau", 0.1)).build(model_parts=[via_dcp])
    with pytest.raises(CheckpointException, match="Missing key in checkpoint state_dict"):
        dcp.load({"optimizer": ours}, checkpoint_id=str(tmp_path / "adamw"))  # what CheckpointManager does
    dcp.load({"optimizer": ours}, checkpoint_id=str(tmp_path / "adamw"), planner=GroupKeysLoadPlanner())
    reference = OptimizersContainer.Config(param_groups=groups("AdamWTau", 0.1)).build(model_parts=[via_sd])
    reference.optimizers[0].load_state_dict(adamw.optimizers[0].state_dict())
    assert ours.optimizers[0].state_dict()["state"][0]["step"].item() == 3
    _train(via_dcp, ours, 3, start=3)
    _train(via_sd, reference, 3, start=3)
    _same(via_sd, via_dcp)


# --- the step inside backward (docs/integrations.md, "The step inside backward") -------------------
STEPS_IN_BACKWARD, MICRO = 3, 2


def _loss_fn(pred, labels):
    return ((pred - labels) ** 2).mean()


def _micro_batches(t, micro=MICRO):
    g = torch.Generator().manual_seed(100 + t)
    return [(torch.randn(5, 6, generator=g), torch.randn(5, 3, generator=g)) for _ in range(micro)]


def _step_in_backward_recipe(model):
    from torchtitan.components.optimizer.lr_scheduler import LRSchedulersContainer
    return run_recipe("torchtitan-step-in-backward", model=model, loss_fn=_loss_fn, steps=STEPS_IN_BACKWARD,
                      lr_schedulers_config=LRSchedulersContainer.Config(warmup_steps=2))


def _run_train_steps(ns, micro=MICRO):
    for t in range(STEPS_IN_BACKWARD):
        ns["train_step"](_micro_batches(t, micro))


@pytest.mark.usefixtures("launch_per_tensor")
def test_step_in_backward_recipe_is_the_ordinary_step_bitwise():
    import dataclasses
    ns = _step_in_backward_recipe(_model())
    freed = freed_in_backward(ns["model"])
    opt = ns["optimizers"].optimizers[0]
    assert opt._step_in_backward
    ordinary = dict(ns)  # the same recipe, train_step and scheduler config, with the flag off
    ordinary["model"] = _model()
    ordinary["optimizers"] = dataclasses.replace(ns["optimizer_config"], optimizer_factory_kwargs_by_name={
        "AdamWTau": {"step_in_backward": False}}).build(model_parts=[ordinary["model"]])
    ordinary["lr_schedulers"] = ns["lr_schedulers_config"].build(optimizers=ordinary["optimizers"],
                                                                 training_steps=STEPS_IN_BACKWARD)
    # the recipe's train_step over the ordinary namespace (rerunning the recipe would hook the model)
    ordinary_step = types.FunctionType(ns["train_step"].__code__, ordinary)
    # torchtitan's checkpoint path first: the container's lr=0 state creation, then training
    assert ns["optimizers"].state_dict().keys() == ordinary["optimizers"].state_dict().keys()
    _run_train_steps(ns)
    for t in range(STEPS_IN_BACKWARD):
        ordinary_step(_micro_batches(t))
    _same(ordinary["model"], ns["model"])
    want = optimizer_tensors(ordinary["optimizers"].optimizers[0])
    got = optimizer_tensors(opt)
    assert want.keys() == got.keys() and all(torch.equal(bits(want[k]), bits(got[k])) for k in want)
    assert opt.param_groups[0]["lr"] != 3e-4  # the scheduler ran
    n = len(list(ns["model"].parameters()))  # the last micro-batch's backward freed them; the first kept them
    assert freed == ([False] * n + [True] * n) * STEPS_IN_BACKWARD


def _torchtitan_train_step(model, optimizers, max_norm, t):
    """torchtitan's Trainer.train_step with one micro-batch: zero_grad, backward, its clipping, step."""
    from torchtitan.distributed.utils import clip_grad_norm_
    optimizers.zero_grad()
    (inputs, labels), = _micro_batches(t, 1)
    _loss_fn(model(inputs), labels).backward()
    norm = clip_grad_norm_([p for p in model.parameters()], max_norm, foreach=True)
    optimizers.step()
    return float(norm)


@pytest.mark.parametrize("max_norm", [float("inf"), 1e-3])
def test_step_in_backward_torchtitans_clipping_sees_no_gradient(max_norm):
    """torchtitan clips after backward: by then the step inside backward has stepped every
    parameter, the bucket still waiting at the end of backward too, and freed every gradient, so
    its clipping sees none (a norm of 0) and changes no bit; it does not clip either, so it must
    be off (training.max_norm = inf) for the run to be what its config says."""
    ordinary, inside = _model(), _model()
    ns = _step_in_backward_recipe(inside)
    plain = OptimizersContainer.Config(param_groups=ns["optimizer_config"].param_groups).build(model_parts=[ordinary])
    ns["lr_schedulers_config"].build(optimizers=plain, training_steps=STEPS_IN_BACKWARD)  # its warmup lr, as inside
    norms = [(_torchtitan_train_step(inside, ns["optimizers"], max_norm, t),
              _torchtitan_train_step(ordinary, plain, float("inf"), t)) for t in range(STEPS_IN_BACKWARD)]
    assert all(inside_norm == 0.0 and ordinary_norm > 0 for inside_norm, ordinary_norm in norms)
    assert all(torch.equal(bits(p), bits(q)) for p, q in zip(ordinary.parameters(), inside.parameters()))


def test_step_in_backward_torchtitans_own_accumulation_raises_at_the_second_micro_batch():
    """torchtitan's Trainer.train_step: every micro-batch's backward, none inside accumulating()."""
    model = _model()
    ns = _step_in_backward_recipe(model)
    first, second = _micro_batches(0)
    _loss_fn(model(first[0]), first[1]).backward()
    with pytest.raises(RuntimeError, match="got a second gradient before opt.step"):
        _loss_fn(model(second[0]), second[1]).backward()
    del ns


@pytest.mark.parametrize("argument, value", [("step_in_backward", True), ("backend", "reference"), ("seed", 3)])
def test_step_in_backward_in_a_param_group_is_refused_before_building(argument, value):
    """AdamWTau's optimizer-wide arguments: in a group dict they would be kept and never read."""
    model = _model()
    before = [bits(p) for p in model.parameters()]
    config = OptimizersContainer.Config(param_groups=[
        ParamGroupConfig(pattern=r"bias$", optimizer_name="AdamWTau", optimizer_kwargs={"lr": 1e-3}),
        ParamGroupConfig(pattern=r".*", optimizer_name="AdamWTau", optimizer_kwargs={"lr": 1e-3, argument: value})])
    with pytest.raises(ValueError, match=rf"param_groups\[1\].*'{argument}'.*optimizer_factory_kwargs_by_name"):
        config.build(model_parts=[model])
    assert all(torch.equal(b, bits(p)) for b, p in zip(before, model.parameters()))
