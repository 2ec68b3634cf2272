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
"""
from __future__ import annotations

import functools

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


def __getattr__(name: str):
    # the class subclasses Lightning's, so it is made when first asked for, not at import
    if name == "ClippingMixedPrecision":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
