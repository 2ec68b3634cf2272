"""transformers' Trainer with AdamWTau through optimizer_cls_and_kwargs (the recipe in
docs/integrations.md): the Trainer's decay split, and a resumed run bitwise equal to an
uninterrupted one; the step inside backward through the factory (its refusals, the Trainer's
accumulation), bitwise the ordinary step."""
import pytest
import torch

from frameworks import launch_per_tensor, need, optimizer_tensors, run_recipe, same_bits  # noqa: F401

transformers = need("transformers")
need("accelerate")

from adamw_tau import AdamWTau  # noqa: E402
from adamw_tau.integrations.huggingface import TrainerOptimizer, build_optimizer, param_groups  # noqa: E402

STEPS, SAVE_AT, BATCH, SEQ = 6, 3, 4, 16


def _model(seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=64, n_positions=SEQ, n_embd=16, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(7)
        self.ids = torch.randint(0, 64, (n, SEQ), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _args(out):
    return transformers.TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=BATCH, learning_rate=1e-2,
        lr_scheduler_type="cosine", warmup_steps=1, save_strategy="steps", save_steps=SAVE_AT,
        logging_strategy="no", report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True)


def _trainer(out, seed=0):
    ns = run_recipe("hf", model=_model(seed), train_dataset=_Tokens(STEPS * BATCH), args=_args(out))
    return ns["trainer"]


def _raw(opt):
    return getattr(opt, "optimizer", opt)  # accelerate wraps it


def test_trainer_split_no_decay_for_biases_and_norms():
    model = _model()
    groups = param_groups(model, lr=1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert "weight_decay" not in groups[0] and groups[1]["weight_decay"] == 0.0
    assert all("bias" not in n and ".ln_" not in n for n in decayed)
    assert any(n.endswith(".bias") for n in plain) and any(".ln_1." in n for n in plain)
    assert "transformer.h.0.attn.c_attn.weight" in decayed and "transformer.wte.weight" in decayed
    opt = build_optimizer(model, lr=1e-3, tau_iters=100.0)
    assert [g["decay"] for g in opt.param_groups] == ["tau", "none"]


def test_mup_groups_keep_the_trainer_split():
    base = _model()
    wide = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_positions=SEQ, n_embd=32,
                                                                n_layer=2, n_head=2))
    opt = build_optimizer(wide, lr=1e-2, tau_iters=50.0, mup=dict(base_model=base))
    classes = set()
    for g in opt.param_groups:
        plain = [n.endswith("bias") or ".ln_" in n for n in g["param_names"]]
        assert all(plain) or not any(plain), g["param_names"]
        assert g["decay"] == ("none" if plain[0] else "tau"), g["param_names"]
        classes.add(g["mup_class"])
        if g["mup_class"] == "hidden":
            assert g["lr"] == 1e-2 / 2  # width 32 over base 16
    assert "hidden" in classes


def test_trainer_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.train()
    opt = _raw(straight.optimizer)
    assert type(opt).__name__ == "AdamWTau" and [g["decay"] for g in opt.param_groups] == ["tau", "none"]
    assert opt.state_dict()["state"][0]["step"].item() == STEPS

    resumed = _trainer(tmp_path / "b", seed=123)  # other initial weights: the checkpoint must restore them
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{SAVE_AT}"))

    a, b = dict(straight.model.named_parameters()), dict(resumed.model.named_parameters())
    assert a.keys() == b.keys()
    for name in a:
        assert same_bits(a[name], b[name]), name
    sa, sb = optimizer_tensors(opt), optimizer_tensors(_raw(resumed.optimizer))
    assert sa.keys() == sb.keys() and len(sa) == 3 * len(a)
    for key in sa:
        assert same_bits(sa[key], sb[key]), key


def test_adamwtau_as_cls_loses_the_tau_which_is_why_the_factory_exists(tmp_path):
    # documented pitfall: the Trainer's decayed group carries weight_decay=args.weight_decay (0.0)
    trainer = transformers.Trainer(model=_model(), args=_args(tmp_path), train_dataset=_Tokens(8),
                                   optimizer_cls_and_kwargs=(AdamWTau, dict(lr=1e-2, tau_iters=100.0)))
    assert [g["decay"] for g in trainer.create_optimizer().param_groups] == ["none", "none"]


def _adam_args(out, **kw):
    return transformers.TrainingArguments(
        output_dir=str(out), max_steps=2, per_device_train_batch_size=BATCH, learning_rate=3e-3, adam_beta1=0.8,
        adam_beta2=0.95, adam_epsilon=1e-6, report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
        disable_tqdm=True, **kw)


def test_training_arguments_reach_the_optimizer_and_the_model_card(tmp_path):
    args = _adam_args(tmp_path)
    trainer = run_recipe("hf", model=_model(), train_dataset=_Tokens(8), args=args)["trainer"]
    trainer.train()
    opt = _raw(trainer.optimizer)
    assert [(g["betas"], g["eps"], g["lr_peak"]) for g in opt.param_groups] == [((0.8, 0.95), 1e-6, 3e-3)] * 2
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    line = next(s for s in card.splitlines() if s.startswith("- optimizer:"))
    assert line.startswith("- optimizer: Use adamw_tau with betas=(0.8,0.95) and epsilon=1e-06"), line
    assert "tau_epochs=1.0" in line and "iters_per_epoch=" in line, line


def test_explicit_factory_kwargs_win_and_the_card_says_so(tmp_path):
    args = _adam_args(tmp_path, weight_decay=0.1)
    trainer = transformers.Trainer(model=_model(), args=args, train_dataset=_Tokens(8), optimizer_cls_and_kwargs=(
        TrainerOptimizer, dict(args=args, lr=1e-3, betas=(0.7, 0.9))))
    opt = trainer.create_optimizer()
    assert [(g["betas"], g["eps"], g["lr"]) for g in opt.param_groups] == [((0.7, 0.9), 1e-6, 1e-3)] * 2
    assert [(g["decay"], g["weight_decay"]) for g in opt.param_groups] == [("lambda", 0.1), ("none", 0.0)]
    assert (args.optim, args.learning_rate, args.adam_beta1, args.adam_beta2) == ("adamw_tau", 1e-3, 0.7, 0.9)
    assert "weight_decay=0.1" in args.optim_args


def test_factory_without_training_arguments_says_why():
    with pytest.raises(TypeError, match="learning_rate, adam_beta1"):
        TrainerOptimizer()(_model(), lr=1e-3, tau_iters=10.0)


# --- the step inside backward (docs/integrations.md, "The step inside backward") -------------------
SIB_STEPS = 3


def _sib_args(out, **kw):
    base = dict(output_dir=str(out), max_steps=SIB_STEPS, per_device_train_batch_size=BATCH, learning_rate=1e-2,
                lr_scheduler_type="cosine", warmup_steps=1, save_strategy="no", logging_strategy="no", report_to=[],
                use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True, max_grad_norm=0.0)
    return transformers.TrainingArguments(**{**base, **kw})


class FreedAfterBackward(transformers.TrainerCallback):
    """After each micro-batch's backward: whether every gradient was stepped and freed inside it
    (on_substep_end after one that accumulates, on_pre_optimizer_step after the last)."""

    def __init__(self):
        self.freed = []

    def on_substep_end(self, args, state, control, model=None, **kw):
        self.freed.append(all(p.grad is None for p in model.parameters()))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.freed.append(all(p.grad is None for p in model.parameters()))


def _inside_and_ordinary(tmp_path, micro=1, steps=SIB_STEPS, batches=None, **kw):
    """The recipe's Trainer (step_in_backward=True) and the same with step_in_backward=False, trained."""
    data = (batches or steps * micro) * BATCH
    kw.update(gradient_accumulation_steps=micro, max_steps=steps)
    args = _sib_args(tmp_path / "a", **kw)
    inside = run_recipe("hf-step-in-backward", model=_model(), train_dataset=_Tokens(data), args=args)["trainer"]
    inside.freed = FreedAfterBackward()
    inside.add_callback(inside.freed)
    inside.train()
    plain_args = _sib_args(tmp_path / "b", **kw)
    ordinary = transformers.Trainer(model=_model(), args=plain_args, train_dataset=_Tokens(data),
                                    optimizer_cls_and_kwargs=(TrainerOptimizer, dict(args=plain_args, tau_iters=10_000,
                                                                                     step_in_backward=False)))
    ordinary.train()
    return inside, ordinary


def _assert_same_training(inside, ordinary, steps=SIB_STEPS):
    o_inside, o_ordinary = _raw(inside.optimizer), _raw(ordinary.optimizer)
    assert o_inside._step_in_backward and not o_ordinary._step_in_backward
    assert o_inside.state_dict()["state"][0]["step"].item() == steps
    assert o_inside.param_groups[0]["lr"] == o_ordinary.param_groups[0]["lr"]
    a, b = dict(inside.model.named_parameters()), dict(ordinary.model.named_parameters())
    for name in a:
        assert same_bits(a[name], b[name]), name
    assert not same_bits(a["transformer.h.0.attn.c_attn.weight"],
                         dict(_model().named_parameters())["transformer.h.0.attn.c_attn.weight"])


@pytest.mark.usefixtures("launch_per_tensor")
@pytest.mark.parametrize("bf16", [False, True])
def test_step_in_backward_recipe_is_the_ordinary_step_bitwise(tmp_path, bf16):
    inside, ordinary = _inside_and_ordinary(tmp_path, bf16=bf16)
    _assert_same_training(inside, ordinary)
    assert inside.freed.freed == [True] * SIB_STEPS


@pytest.mark.usefixtures("launch_per_tensor")
@pytest.mark.parametrize("batches", [4, 3])  # 3: the epoch ends with a group of one micro-batch
def test_step_in_backward_with_the_trainers_accumulation_is_the_ordinary_step_bitwise(tmp_path, batches):
    inside, ordinary = _inside_and_ordinary(tmp_path, micro=2, steps=2, batches=batches)
    _assert_same_training(inside, ordinary, steps=2)
    assert inside.state.global_step == 2
    assert inside.freed.freed == [False, True] + ([False, True] if batches == 4 else [True])


@pytest.mark.parametrize("kw, match", [
    (dict(max_grad_norm=1.0), "max_grad_norm=1.0 .*Set max_grad_norm=0"),
    (dict(fp16=True), "fp16=True .*GradScaler.*bf16=True"),
])
def test_step_in_backward_refuses_training_arguments_it_cannot_follow(tmp_path, kw, match):
    args = _sib_args(tmp_path, **kw) if "fp16" not in kw else _sib_args(tmp_path)
    if "fp16" in kw:
        args.fp16 = True  # TrainingArguments refuses fp16 on a CPU itself; the factory is what a GPU run meets
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=match):
        TrainerOptimizer()(model, args=args, tau_iters=100.0, step_in_backward=True)
    assert all(same_bits(before[n], p) for n, p in model.named_parameters())


def test_step_in_backward_trainer_accumulation_without_the_factory_raises_at_the_second_micro_batch(tmp_path):
    """What the factory refuses, handed over as optimizers=: the Trainer's own accumulation."""
    model = _model()
    args = _sib_args(tmp_path, gradient_accumulation_steps=2, max_steps=1)
    opt = build_optimizer(model, lr=1e-2, tau_iters=100.0, step_in_backward=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens(2 * BATCH), optimizers=(opt, None))
    with pytest.raises(RuntimeError, match="got a second gradient before opt.step"):
        trainer.train()


def _clip_run(tmp_path, name, **factory):
    args = _adam_args(tmp_path / name, max_grad_norm=0.05)
    args.max_steps = 4
    trainer = transformers.Trainer(model=_model(), args=args, train_dataset=_Tokens(16), optimizer_cls_and_kwargs=(
        TrainerOptimizer, dict(args=args, tau_iters=100.0, **factory)))
    trainer.train()
    return trainer, args


@pytest.mark.slow  # full tier: two Trainer runs, 7.8 CPU s measured
def test_max_grad_norm_moves_into_the_optimizer(tmp_path):
    """The factory takes args.max_grad_norm, sets the Trainer's to 0 (no second clipping), and the
    run follows the Trainer's own clipping (torch's clip_grad_norm_) within rounding."""
    ours, args = _clip_run(tmp_path, "ours")
    opt = _raw(ours.optimizer)
    assert opt._max_grad_norm == 0.05 and args.max_grad_norm == 0.0 and "max_grad_norm=0.05" in args.optim_args
    assert float(opt.grad_norm) > 0.05  # it clipped
    theirs, their_args = _clip_run(tmp_path, "theirs", max_grad_norm=None)
    assert _raw(theirs.optimizer)._max_grad_norm is None and their_args.max_grad_norm == 0.05
    for (n, p), q in zip(ours.model.named_parameters(), theirs.model.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), n
