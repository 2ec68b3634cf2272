"""Lightning trains with AdamWTau (the recipes in docs/integrations.md): a step-interval
scheduler and the closure, in 32-true and bf16-mixed, bitwise equal to the hand-written loop;
fp16 AMP with gradient clipping refused by Lightning's plugin and working with ours."""
import warnings

import pytest
import torch

from frameworks import bits, need, run_recipe

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
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=STEPS, logger=False, enable_checkpointing=False,
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
