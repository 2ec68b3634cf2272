"""torch.distributed.checkpoint with flattened optimizer state dicts (torchtitan's layout), in
one process: the zero-gradient lr=0 step that creates state changes no bit; AdamWTau resumes
bitwise; torch AdamW and AdamWTau checkpoints load into each other (the recipe in
docs/integrations.md)."""
import pytest
import torch

from adamw_tau.formats import registry
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)

from adamw_tau import AdamWTau
from adamw_tau.integrations.dcp import GroupKeysLoadPlanner
from frameworks import bits, optimizer_tensors, run_recipe

FLAT = StateDictOptions(flatten_optimizer_state_dict=True)
DECAYS = [dict(), dict(weight_decay=0.1), dict(tau_iters=50.0), dict(tau_epochs=2.0, iters_per_epoch=10)]


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.LayerNorm(12), torch.nn.Linear(12, 3))


def _train(model, opt, steps, start=0):
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(t)
        opt.zero_grad()
        ((model(torch.randn(5, 6, generator=g)) - torch.randn(5, 3, generator=g)) ** 2).mean().backward()
        opt.step()


def _same_params(a, b):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(bits(p), bits(q)), n


def _hard_params(dtype):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(7, 9, generator=g) * torch.logspace(-30, 30, 9)
    w[0, :3] = torch.tensor([0.0, -0.0, 1e-40])  # zeros of both signs and a subnormal
    return [torch.nn.Parameter(w.to(dtype)), torch.nn.Parameter(torch.randn(9, generator=g).to(dtype))]


@pytest.mark.parametrize("decay", DECAYS, ids=["none", "lambda", "tau_iters", "tau_epochs"])
@pytest.mark.parametrize("options", [
    dict(), dict(amsgrad=True, maximize=True), dict(backend="reference"),
    dict(dtype=torch.bfloat16, master_weights=True), dict(dtype=torch.bfloat16, stochastic_rounding=True, seed=3),
    dict(dtype=torch.float16), dict(tensor_lr=True), dict(dtype=torch.bfloat16, master_weights="remainder"),
], ids=["fp32", "amsgrad-maximize", "reference", "bf16-master", "bf16-sr", "fp16", "tensor-lr", "bf16-remainder"])
def test_zero_grad_step_at_lr_zero_changes_no_bit(decay, options):
    options = dict(options)
    dtype, tensor_lr = options.pop("dtype", torch.float32), options.pop("tensor_lr", False)
    ps = _hard_params(dtype)
    opt = AdamWTau(ps, lr=torch.tensor(1e-2) if tensor_lr else 1e-2, **decay, **options)
    before = [bits(p) for p in ps]
    # what torch's DCP and torchtitan do before saving an optimizer with no state
    for p in ps:
        p.grad = torch.zeros_like(p)
    for group in opt.param_groups:
        group["lr"] = torch.tensor(0.0) if isinstance(group["lr"], torch.Tensor) else 0.0
    opt.step()
    assert all(len(opt.state[p]) >= 3 for p in ps)
    for b, p in zip(before, ps):
        assert torch.equal(b, bits(p))
        if "master_param" in opt.state[p]:  # the fp32 master holds what a bf16 param would round away
            assert torch.equal(bits(opt.state[p]["master_param"]), bits(p.float()))


def test_state_created_by_get_optimizer_state_dict_changes_no_bit():
    model = _net()
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=5.0)
    before = [bits(p) for p in model.parameters()]
    sd = get_optimizer_state_dict(model, opt, options=FLAT)
    assert "state.0.weight.exp_avg" in sd and "param_groups.0.weight.tau_iters" in sd
    assert all(torch.equal(b, bits(p)) for b, p in zip(before, model.parameters()))


def _save(model, opt, path):
    dcp.save({"optim": get_optimizer_state_dict(model, opt, options=FLAT)}, checkpoint_id=str(path))


def _load(model, opt, path):
    return run_recipe("dcp-load", model=model, optimizer=opt, checkpoint_id=str(path))


def test_adamwtau_resumes_bitwise_through_flattened_dcp(tmp_path):
    straight = _net()
    opt = AdamWTau(straight.parameters(), lr=1e-2, tau_iters=40.0, amsgrad=True)
    _train(straight, opt, 6)

    first = _net()
    opt1 = AdamWTau(first.parameters(), lr=1e-2, tau_iters=40.0, amsgrad=True)
    _train(first, opt1, 3)
    _save(first, opt1, tmp_path / "ck")
    resumed = _net()
    resumed.load_state_dict(first.state_dict())
    opt2 = AdamWTau(resumed.parameters(), lr=1e-2, tau_iters=40.0, amsgrad=True)
    assert _load(resumed, opt2, tmp_path / "ck")["planner"].kept == []
    _train(resumed, opt2, 3, start=3)
    _same_params(straight, resumed)
    want, got = optimizer_tensors(opt), optimizer_tensors(opt2)
    assert want.keys() == got.keys()
    assert all(torch.equal(bits(want[k]), bits(got[k])) for k in want)


def test_torch_adamw_checkpoint_into_adamwtau(tmp_path):
    model = _net()
    torch_opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    _train(model, torch_opt, 3)
    _save(model, torch_opt, tmp_path / "adamw")

    via_dcp, via_sd = _net(1), _net(2)
    via_dcp.load_state_dict(model.state_dict())
    via_sd.load_state_dict(model.state_dict())
    ours = AdamWTau(via_dcp.parameters(), lr=1e-2, weight_decay=0.1)
    ns = _load(via_dcp, ours, tmp_path / "adamw")
    assert {k.rsplit(".", 1)[1] for k in ns["planner"].kept} == {
        "decay", "tau_iters", "tau_epochs", "iters_per_epoch", "lr_peak", "master_weights", "stochastic_rounding",
        "state_dtype", "min_quantized_numel"}
    reference = AdamWTau(via_sd.parameters(), lr=1e-2, weight_decay=0.1)
    reference.load_state_dict(torch_opt.state_dict())
    assert ours.state_dict()["state"][0]["step"].item() == 3
    _train(via_dcp, ours, 3, start=3)
    _train(via_sd, reference, 3, start=3)
    _same_params(via_sd, via_dcp)
    # documented: a group built without decay reads weight_decay as torch does, so the checkpoint's λ applies
    plain = _net(3)
    built_without_decay = AdamWTau(plain.parameters(), lr=1e-2)
    _load(plain, built_without_decay, tmp_path / "adamw")
    assert [(g["decay"], g["weight_decay"]) for g in built_without_decay.param_groups] == [("lambda", 0.1)]
    assert built_without_decay.timescales()[0]["decay"] == "lambda"
    # a τ group keeps its τ: the checkpoint's λ is not read there, and weight_decay shows the τ's λ
    tau_model = _net(4)
    built_tau = AdamWTau(tau_model.parameters(), lr=1e-2, tau_iters=50.0)
    _load(tau_model, built_tau, tmp_path / "adamw")
    assert [(g["decay"], g["tau_iters"]) for g in built_tau.param_groups] == [("tau", 50.0)]
    assert built_tau.param_groups[0]["weight_decay"] == pytest.approx(1 / (1e-2 * 50.0))


def test_adamwtau_checkpoint_into_torch_adamw(tmp_path):
    model = _net()
    opt = AdamWTau(model.parameters(), lr=1e-2, weight_decay=0.1)
    _train(model, opt, 3)
    _save(model, opt, tmp_path / "ours")

    via_dcp, via_sd = _net(1), _net(2)
    via_dcp.load_state_dict(model.state_dict())
    via_sd.load_state_dict(model.state_dict())
    theirs = torch.optim.AdamW(via_dcp.parameters(), lr=1e-2, weight_decay=0.1)
    ns = _load(via_dcp, theirs, tmp_path / "ours")
    assert {k.rsplit(".", 1)[1] for k in ns["planner"].kept} == {"foreach", "fused", "differentiable",
                                                                  "decoupled_weight_decay"}
    reference = torch.optim.AdamW(via_sd.parameters(), lr=1e-2, weight_decay=0.1)
    reference.load_state_dict(opt.state_dict())
    _train(via_dcp, theirs, 3, start=3)
    _train(via_sd, reference, 3, start=3)
    _same_params(via_sd, via_dcp)


def test_planner_on_a_flat_dict_without_flattening_keeps_the_missing_keys(tmp_path):
    # the flat optimizer state dict handed to dcp.load as it is: the planner's dict is the caller's
    model = _net()
    torch_opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    _train(model, torch_opt, 2)
    dcp.save(get_optimizer_state_dict(model, torch_opt, options=FLAT), checkpoint_id=str(tmp_path / "flat"))
    fresh = _net()
    ours = AdamWTau(fresh.parameters(), lr=1e-2, weight_decay=0.1)
    state = get_optimizer_state_dict(fresh, ours, options=FLAT)
    planner = GroupKeysLoadPlanner(flatten_state_dict=False, flatten_sharded_tensors=False)  # no copy made
    dcp.load(state, checkpoint_id=str(tmp_path / "flat"), planner=planner)
    assert "param_groups.0.weight.decay" in planner.kept and state["param_groups.0.weight.decay"] == "lambda"
    set_optimizer_state_dict(fresh, ours, state, options=FLAT)
    assert ours.state_dict()["state"][0]["step"].item() == 2


def test_without_the_planner_dcp_refuses_and_with_it_state_must_still_be_there(tmp_path):
    model = _net()
    torch_opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, torch_opt, 1)
    _save(model, torch_opt, tmp_path / "adamw")
    ours = AdamWTau(model.parameters(), lr=1e-2)
    state = {"optim": get_optimizer_state_dict(model, ours, options=FLAT)}
    with pytest.raises(CheckpointException, match="Missing key in checkpoint state_dict"):
        dcp.load(state, checkpoint_id=str(tmp_path / "adamw"))
    with pytest.raises(CheckpointException, match="Missing key in checkpoint state_dict: optim.state.0.weight.max_exp_avg_sq"):
        fresh = _net()  # no gradients: get_optimizer_state_dict creates the state it asks the checkpoint for
        _load(fresh, AdamWTau(fresh.parameters(), lr=1e-2, amsgrad=True), tmp_path / "adamw")


def _net8(seed=0):  # a 64x64 weight: 4096 elements, 8-bit states; the rest fp32
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 3))


def _train8(model, opt, steps, start=0):
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(t)
        opt.zero_grad()
        ((model(torch.randn(5, 6, generator=g)) - torch.randn(5, 3, generator=g)) ** 2).mean().backward()
        opt.step()


Q8 = dict(lr=1e-2, weight_decay=0.1, amsgrad=True, state_dtype="8bit", backend="reference")
# every quantized format (formats.registry): its state_dtype option and its codes' key suffix
QUANTIZED = [pytest.param(f.option, f.codec.CODES_SUFFIX, id=f.name) for f in registry.QUANTIZED]


@pytest.mark.parametrize("option,suffix", QUANTIZED)
def test_torch_adamw_checkpoint_into_8bit_adamwtau_is_encoded_as_load_state_dict_does(tmp_path, option, suffix):
    kw = {**Q8, "state_dtype": option}
    model = _net8()
    torch_opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, amsgrad=True)
    _train8(model, torch_opt, 3)
    _save(model, torch_opt, tmp_path / "adamw")
    via_dcp, via_sd = _net8(1), _net8(2)
    via_dcp.load_state_dict(model.state_dict())
    via_sd.load_state_dict(model.state_dict())
    ours, reference = AdamWTau(via_dcp.parameters(), **kw), AdamWTau(via_sd.parameters(), **kw)
    _load(via_dcp, ours, tmp_path / "adamw")
    reference.load_state_dict(torch_opt.state_dict())
    want, got = optimizer_tensors(reference), optimizer_tensors(ours)
    assert want.keys() == got.keys() and f"2/exp_avg{suffix}" in got
    assert all(torch.equal(bits(want[k]), bits(got[k])) for k in want)
    _train8(via_dcp, ours, 2, start=3)
    _train8(via_sd, reference, 2, start=3)
    _same_params(via_sd, via_dcp)


@pytest.mark.parametrize("option,suffix", QUANTIZED)
def test_8bit_adamwtau_checkpoint_into_torch_adamw_is_decoded_or_refused(tmp_path, option, suffix):
    model = _net8()
    opt = AdamWTau(model.parameters(), **{**Q8, "state_dtype": option})
    _train8(model, opt, 3)
    _save(model, opt, tmp_path / "ours")
    # DCP's default planner: the moments' keys are missing, never codes read as values
    fresh = _net8(1)
    state = {"optim": get_optimizer_state_dict(fresh, torch.optim.AdamW(fresh.parameters(), amsgrad=True),
                                               options=FLAT)}
    missing = r"Missing key in checkpoint state_dict: optim\.state\.1\.weight\.exp_avg"
    with pytest.raises(CheckpointException, match=missing):
        dcp.load(state, checkpoint_id=str(tmp_path / "ours"))
    # the recipe's planner decodes them: the moments of torch_state_dict()
    via_dcp, via_sd = _net8(1), _net8(2)
    via_dcp.load_state_dict(model.state_dict())
    via_sd.load_state_dict(model.state_dict())
    theirs = torch.optim.AdamW(via_dcp.parameters(), lr=1e-2, weight_decay=0.1, amsgrad=True)
    _load(via_dcp, theirs, tmp_path / "ours")
    reference = torch.optim.AdamW(via_sd.parameters(), lr=1e-2, weight_decay=0.1, amsgrad=True)
    reference.load_state_dict(opt.torch_state_dict())
    want, got = optimizer_tensors(reference), optimizer_tensors(theirs)
    assert want.keys() == got.keys() and got["2/exp_avg"].dtype == torch.float32
    assert got["2/exp_avg"].abs().max().item() < 1.0  # moments, not codes 0..255
    assert all(torch.equal(bits(want[k]), bits(got[k])) for k in want)
    _train8(via_dcp, theirs, 2, start=3)
    _train8(via_sd, reference, 2, start=3)
    _same_params(via_sd, via_dcp)


@pytest.mark.parametrize("option,suffix", QUANTIZED)
def test_8bit_adamwtau_resumes_bitwise_through_flattened_dcp(tmp_path, option, suffix):
    kw = {**Q8, "state_dtype": option}
    straight = _net8()
    opt = AdamWTau(straight.parameters(), **kw)
    _train8(straight, opt, 4)
    first = _net8()
    opt1 = AdamWTau(first.parameters(), **kw)
    _train8(first, opt1, 2)
    _save(first, opt1, tmp_path / "ck")
    resumed = _net8()
    resumed.load_state_dict(first.state_dict())
    opt2 = AdamWTau(resumed.parameters(), **kw)
    _load(resumed, opt2, tmp_path / "ck")
    _train8(resumed, opt2, 2, start=2)
    _same_params(straight, resumed)
    want, got = optimizer_tensors(opt), optimizer_tensors(opt2)
    assert want.keys() == got.keys()
    assert all(torch.equal(bits(want[k]), bits(got[k])) for k in want)
