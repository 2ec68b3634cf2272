"""Lightning trains with AdamWTau (the recipes in docs/integrations.md): a step-interval
scheduler and the closure, in 32-true and bf16-mixed, bitwise equal to the hand-written loop;
fp16 AMP with gradient clipping refused by Lightning's plugin and working with ours; the step inside
backward with manual optimization and with the StepInBackward callback, bitwise the ordinary step."""
import warnings

import pytest
import torch

from frameworks import bits, launch_per_tensor, need, run_recipe  # noqa: F401

need("lightning")
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.plugins.precision import MixedPrecision  # noqa: E402

from adamw_tau import AdamWTau  # noqa: E402

STEPS, BATCH, CLIP = 6, 8, 0.05


def _data():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(STEPS * BATCH, 6, generator=g), torch.randn(STEPS * BATCH, 2, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


class Base(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = _net()
        self.seen = []

    def training_step(self, batch, i):
        opt = self.optimizers()
        self.seen.append((type(opt).__name__, isinstance(opt, AdamWTau)))
        x, y = batch
        return ((self.net(x).float() - y) ** 2).mean()


def _model_class():
    return run_recipe("lightning", Base=Base, max_steps=STEPS)["Model"]


def _fit(model, **trainer_args):
    trainer_args = {"max_steps": STEPS, **trainer_args}
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **trainer_args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, torch.utils.data.DataLoader(_data(), batch_size=BATCH, shuffle=False))
    return trainer


def _by_hand(autocast=None, scaler=None, clip=None):
    """The loop Lightning runs, written out: the same model, optimizer, scheduler and batches."""
    module = Base()
    opt_conf = _model_class().configure_optimizers(module)
    opt, sched = opt_conf["optimizer"], opt_conf["lr_scheduler"]["scheduler"]
    for x, y in torch.utils.data.DataLoader(_data(), batch_size=BATCH, shuffle=False):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=autocast, cache_enabled=False, enabled=autocast is not None):
            loss = ((module.net(x).float() - y) ** 2).mean()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(module.net.parameters(), clip)
            scaler.step(opt)
            scaler.update()
        sched.step()
    return module, opt


def _same(a, b):
    for (n, p), q in zip(a.net.named_parameters(), b.net.parameters()):
        assert torch.equal(bits(p), bits(q)), n


@pytest.mark.parametrize("precision, autocast", [("32-true", None), ("bf16-mixed", torch.bfloat16)])
def test_trains_with_a_step_scheduler_as_the_hand_loop(precision, autocast):
    model = _model_class()()
    trainer = _fit(model, precision=precision)
    opt = trainer.optimizers[0]
    assert type(opt) is AdamWTau and model.seen[0] == ("LightningAdamWTau", True) and len(model.seen) == STEPS
    assert all(st["step"].item() == STEPS for st in opt.state.values())
    assert opt.param_groups[0]["lr"] != opt.param_groups[0]["lr_peak"]  # the scheduler ran
    want, want_opt = _by_hand(autocast)
    assert opt.param_groups[0]["lr"] == want_opt.param_groups[0]["lr"]
    _same(model, want)


def test_fp16_clipping_refused_by_lightnings_plugin():
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        _fit(_model_class()(), plugins=[MixedPrecision("16-mixed", "cpu")], gradient_clip_val=CLIP)


def test_fp16_clipping_with_our_plugin_is_the_hand_loop():
    model = _model_class()()
    trainer_args = dict(accelerator="cpu", devices=1, max_steps=STEPS, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    ns = run_recipe("lightning-fp16-clip", device="cpu", trainer_args=trainer_args)
    trainer = ns["trainer"]
    trainer.gradient_clip_val = CLIP  # the recipe's 1.0 does not clip this tiny model; this value does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, torch.utils.data.DataLoader(_data(), batch_size=BATCH, shuffle=False))
    want, _ = _by_hand(torch.float16, torch.amp.GradScaler("cpu"), CLIP)
    _same(model, want)
    unclipped, _ = _by_hand(torch.float16, torch.amp.GradScaler("cpu"), 1e9)
    assert any(not torch.equal(bits(p), bits(q)) for p, q in zip(model.net.parameters(), unclipped.net.parameters()))


# --- the step inside backward (docs/integrations.md, "The step inside backward") -------------------
MICRO = 2


class LossBase(Base):
    def loss(self, batch):
        x, y = batch
        return ((self.net(x).float() - y) ** 2).mean()


class _Ordinary(AdamWTau):
    """AdamWTau with the step inside backward switched off, whatever the recipe asks."""

    def __init__(self, *args, step_in_backward=False, **kwargs):
        super().__init__(*args, step_in_backward=False, **kwargs)


def _step_in_backward_model(in_backward, monkeypatch):
    import adamw_tau
    with monkeypatch.context() as m:
        if not in_backward:
            m.setattr(adamw_tau, "AdamWTau", _Ordinary)  # the recipe's `from adamw_tau import AdamWTau`
        cls = run_recipe("lightning-step-in-backward", Base=LossBase, max_steps=STEPS // MICRO, micro_batches=MICRO)
    return cls["Model"]()


def _fit_steps(model, **trainer_args):
    return _fit(model, **{"max_steps": STEPS // MICRO, **trainer_args})


class FreedAfterBackward(pl.Callback):
    """After each backward: whether every gradient was stepped and freed inside it."""

    def __init__(self):
        self.freed = []

    def on_after_backward(self, trainer, pl_module):
        self.freed.append(all(p.grad is None for p in pl_module.parameters()))


def _freed_pattern(batches, accumulate):
    """Per batch: freed inside backward on the last micro-batch of a group, or of the epoch."""
    return [(i + 1) % accumulate == 0 or i + 1 == len(_data()) // BATCH for i in range(batches)]


@pytest.mark.usefixtures("launch_per_tensor")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_step_in_backward_manual_recipe_is_the_ordinary_step_bitwise(precision, monkeypatch):
    inside, ordinary = _step_in_backward_model(True, monkeypatch), _step_in_backward_model(False, monkeypatch)
    freed = FreedAfterBackward()
    t_inside = _fit_steps(inside, precision=precision, callbacks=[freed])
    t_ordinary = _fit_steps(ordinary, precision=precision)
    o_inside, o_ordinary = t_inside.optimizers[0], t_ordinary.optimizers[0]
    assert o_inside._step_in_backward and not o_ordinary._step_in_backward
    assert all(st["step"].item() == STEPS // MICRO for st in o_inside.state.values())
    assert o_inside.param_groups[0]["lr"] == o_ordinary.param_groups[0]["lr"] != 3e-3  # the scheduler ran
    _same(inside, ordinary)
    assert freed.freed == _freed_pattern(STEPS, MICRO)
    unstepped = _step_in_backward_model(True, monkeypatch)
    assert any(not torch.equal(bits(p), bits(q)) for p, q in zip(inside.net.parameters(), unstepped.net.parameters()))


@pytest.mark.parametrize("kw, match", [
    (dict(gradient_clip_val=1.0), "gradient clipping is not supported for manual optimization"),
    (dict(accumulate_grad_batches=2), "gradient accumulation is not supported for manual optimization"),
])
def test_step_in_backward_manual_lightning_refuses_its_clipping_and_accumulation(monkeypatch, kw, match):
    with pytest.raises(Exception, match=match):
        _fit_steps(_step_in_backward_model(True, monkeypatch), **kw)


def test_step_in_backward_manual_refuses_fp16s_grad_scaler(monkeypatch):
    with pytest.raises(RuntimeError, match="cannot be stepped by a GradScaler"):
        _fit_steps(_step_in_backward_model(True, monkeypatch), plugins=[MixedPrecision("16-mixed", "cpu")])


def _automatic(in_backward):
    class Automatic(LossBase):
        def training_step(self, batch, i):
            return self.loss(batch)

        def configure_optimizers(self):
            return AdamWTau(self.parameters(), lr=3e-3, tau_iters=1_000, step_in_backward=in_backward)
    return Automatic()


@pytest.mark.usefixtures("launch_per_tensor")
def test_step_in_backward_automatic_optimization_is_the_ordinary_step_bitwise():
    """Lightning's closure runs zero_grad and backward inside opt.step(closure); the backward steps."""
    inside, ordinary = _automatic(True), _automatic(False)
    freed = FreedAfterBackward()
    _fit(inside, max_steps=3, callbacks=[freed])
    _fit(ordinary, max_steps=3)
    _same(inside, ordinary)
    assert freed.freed == [True] * 3
    assert any(not torch.equal(bits(p), bits(q)) for p, q in zip(inside.net.parameters(), _net().parameters()))


def test_step_in_backward_automatic_accumulation_raises_at_the_second_micro_batch():
    with pytest.raises(RuntimeError, match="got a second gradient before opt.step"):
        _fit(_automatic(True), max_steps=3, accumulate_grad_batches=2)


class AutomaticBase(LossBase):
    def training_step(self, batch, i):
        return self.loss(batch)


def _trainer_args(**kw):
    return dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, **kw)


def _fit_with(trainer, model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, torch.utils.data.DataLoader(_data(), batch_size=BATCH, shuffle=False))


@pytest.mark.usefixtures("launch_per_tensor")
@pytest.mark.parametrize("accumulate, steps", [(2, 3), (4, 2)])  # 4: the epoch's 6 batches end inside a group
def test_step_in_backward_callback_maps_accumulation_bitwise(accumulate, steps):
    ns = run_recipe("lightning-step-in-backward-automatic", Base=AutomaticBase,
                    trainer_args=_trainer_args(max_steps=steps))
    trainer, inside = ns["trainer"], ns["Model"]()
    freed = FreedAfterBackward()
    trainer.callbacks.append(freed)
    trainer.accumulate_grad_batches = accumulate  # the recipe's 2, or the value under test
    _fit_with(trainer, inside)
    ordinary = _automatic(False)
    _fit_with(pl.Trainer(accumulate_grad_batches=accumulate, **_trainer_args(max_steps=steps)), ordinary)
    assert trainer.optimizers[0].step_in_backward
    assert all(st["step"].item() == steps for st in trainer.optimizers[0].state.values())
    _same(inside, ordinary)
    assert freed.freed == _freed_pattern(len(_data()) // BATCH, accumulate)


@pytest.mark.parametrize("kw, match", [
    (dict(gradient_clip_val=1.0), "gradient_clip_val=1.0.*Drop gradient_clip_val"),
    (dict(plugins=[MixedPrecision("16-mixed", "cpu")]), "GradScaler.*bf16-mixed"),
])
def test_step_in_backward_callback_refuses_before_the_first_batch(kw, match):
    from adamw_tau.integrations.lightning import StepInBackward
    model = _automatic(True)
    before = [bits(p) for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        _fit_with(pl.Trainer(callbacks=[StepInBackward()], **_trainer_args(max_steps=2, **kw)), model)
    assert all(torch.equal(b, bits(p)) for b, p in zip(before, model.parameters()))


def test_step_in_backward_callback_without_such_an_optimizer_says_so():
    from adamw_tau.integrations.lightning import StepInBackward
    with pytest.raises(ValueError, match="no optimizer of this Trainer is an AdamWTau.step_in_backward=True"):
        _fit_with(pl.Trainer(callbacks=[StepInBackward()], **_trainer_args(max_steps=2)), _automatic(False))


def _clipped_by_hand(autocast=None, scaler=None):
    module = Base()
    opt = run_recipe("lightning-clip", Base=Base, clip=CLIP)["ClippedModel"].configure_optimizers(module)
    for x, y in torch.utils.data.DataLoader(_data(), batch_size=BATCH, shuffle=False):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=autocast, cache_enabled=False, enabled=autocast is not None):
            loss = ((module.net(x).float() - y) ** 2).mean()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return module, opt


@pytest.mark.parametrize("precision, autocast", [("32-true", None), ("16-mixed", torch.float16)])
def test_clipping_inside_the_optimizer_is_the_hand_loop(precision, autocast):
    """The recipe's optimizer clips (its norm above CLIP at the last step) in Lightning as in the
    hand-written loop, bit for bit; fp16-mixed with Lightning's own plugin."""
    model = run_recipe("lightning-clip", Base=Base, clip=CLIP)["ClippedModel"]()
    plugins = [MixedPrecision("16-mixed", "cpu")] if precision == "16-mixed" else []
    trainer = _fit(model, plugins=plugins) if plugins else _fit(model, precision=precision)
    opt = trainer.optimizers[0]
    assert float(opt.grad_norm) > CLIP
    want, want_opt = _clipped_by_hand(autocast, torch.amp.GradScaler("cpu") if autocast is not None else None)
    assert torch.equal(bits(opt.grad_norm), bits(want_opt.grad_norm))
    _same(model, want)
