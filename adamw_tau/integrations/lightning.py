"""Lightning with AdamWTau.

``configure_optimizers`` returns AdamWTau like any torch optimizer, alone or in a dict with a
scheduler (``"interval": "step"``); Lightning's automatic optimization passes a closure that
``step()`` calls. Nothing here is needed for that.

fp16 AMP with gradient clipping: AdamWTau unscales inside its kernel (it has
``_step_supports_amp_scaling``, like torch's fused Adam), so Lightning's ``MixedPrecision``
never unscales the gradients itself and refuses ``gradient_clip_val`` ("does not allow for
gradient clipping because it performs unscaling of gradients internally"): clipping scaled
gradients would be wrong. ``ClippingMixedPrecision`` is that plugin with one change: when
clipping, it unscales first (``scaler.unscale_``), as torch's AMP recipe does for clipping;
``GradScaler.step`` then hands the kernel the inf flag and no scale, and a step with inf/NaN
gradients is still skipped on the device. Pass it as ``Trainer(plugins=[...])``.

The step inside backward under automatic optimization: ``StepInBackward`` is a callback that
refuses what cannot follow it (``gradient_clip_val``, a GradScaler) before the first batch, and
maps ``accumulate_grad_batches`` onto ``opt.accumulating()``.
"""
from __future__ import annotations

import functools

from ..optim.optimizer import AdamWTau
from .requires import require


@functools.lru_cache(maxsize=None)
def _plugin_class():
    require("lightning", "lightning")
    from lightning.pytorch.plugins.precision import MixedPrecision, Precision
    from lightning.pytorch.utilities import GradClipAlgorithmType

    class ClippingMixedPrecision(MixedPrecision):
        """``MixedPrecision`` that unscales before clipping, so optimizers that unscale in their
        own step (AdamWTau, torch's fused Adam) can clip under fp16 AMP."""

        def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm=GradClipAlgorithmType.NORM):
            if clip_val and clip_val > 0 and self.scaler is not None \
                    and getattr(optimizer, "_step_supports_amp_scaling", False):
                self.scaler.unscale_(optimizer)
            Precision.clip_gradients(self, optimizer, clip_val=clip_val,
                                     gradient_clip_algorithm=gradient_clip_algorithm)

    ClippingMixedPrecision.__module__ = __name__
    return ClippingMixedPrecision


@functools.lru_cache(maxsize=None)
def _callback_class():
    require("lightning", "lightning")
    from lightning.pytorch.callbacks import Callback

    class StepInBackward(Callback):
        """Automatic optimization with ``AdamWTau(step_in_backward=True)``.

        [note: Lightning's accumulation]
        Lightning runs the backward of every micro-batch alike (the last inside
        ``opt.step(closure)``) and steps on the last of each ``accumulate_grad_batches`` and on
        the epoch's last batch. Before each batch this callback enters every such optimizer's
        ``accumulating()`` unless the batch is one of those, and leaves it before one that is.
        A last batch it cannot foresee (a loader without a length) still gives the ordinary
        bits: ``opt.step()`` steps the gradients accumulated inside the block, only without
        freeing them early.
        """

        def __init__(self):
            self.blocks: list = []  # the accumulating() contexts while entered

        def on_fit_start(self, trainer, pl_module) -> None:
            optimizers = in_backward(trainer.optimizers)
            if not optimizers:
                raise ValueError("StepInBackward: no optimizer of this Trainer is an AdamWTau(step_in_backward=True); "
                                 "build it with step_in_backward=True, or drop the callback")
            if trainer.gradient_clip_val:
                raise ValueError(
                    f"StepInBackward: Trainer(gradient_clip_val={trainer.gradient_clip_val}) clips by the global norm "
                    "after backward, when every parameter was already stepped inside it and its gradient freed: it "
                    "would clip nothing. Drop gradient_clip_val, or use step_in_backward=False and "
                    "AdamWTau(max_grad_norm=...), which clips inside its step")
            if getattr(trainer.precision_plugin, "scaler", None) is not None:
                raise ValueError(
                    "StepInBackward: this Trainer's precision steps through a GradScaler (16-mixed), which cannot "
                    "undo a step taken inside backward on scaled gradients. Use precision='bf16-mixed', or "
                    "step_in_backward=False")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            last = (batch_idx + 1) % trainer.accumulate_grad_batches == 0 \
                or batch_idx + 1 == trainer.num_training_batches
            if not last and not self.blocks:
                for optimizer in in_backward(trainer.optimizers):
                    block = optimizer.accumulating()
                    block.__enter__()
                    self.blocks.append(block)
            elif last:
                self.leave()

        def on_train_end(self, trainer, pl_module) -> None:
            self.leave()

        def leave(self) -> None:
            while self.blocks:
                self.blocks.pop().__exit__(None, None, None)

    StepInBackward.__module__ = __name__
    return StepInBackward


def in_backward(optimizers) -> list:
    """The AdamWTau optimizers among ``optimizers`` that step inside backward."""
    return [o for o in optimizers if isinstance(o, AdamWTau) and o.step_in_backward]


def __getattr__(name: str):
    # the classes subclass Lightning's, so they are made when first asked for, not at import
    if name == "ClippingMixedPrecision":
        return _plugin_class()
    if name == "StepInBackward":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
