"""torchtitan's optimizer container with AdamWTau.

torchtitan (0.3) builds each parameter group's optimizer by name in
``OptimizersContainer._resolve_optimizer_factory``, which knows "Adam", "AdamW" and
"DistMuon" and has no registry. ``OptimizersContainer`` here is torchtitan's with "AdamWTau"
added; its ``Config`` builds it. torchtitan puts ``fused=`` and ``foreach=`` into every group
(from ``implementation``): AdamWTau accepts them and runs its own kernels.

The step inside backward: ``step_in_backward`` is an argument of the optimizer, not of a
parameter group, so it goes where torchtitan passes a factory's own arguments,
``Config(optimizer_factory_kwargs_by_name={"AdamWTau": {"step_in_backward": True}})``. Put into a
``ParamGroupConfig``'s ``optimizer_kwargs`` it would land in a group dict, where AdamWTau does not
read it; the container refuses that before it builds anything. ``accumulating()`` enters every
AdamWTau's ``accumulating()`` for a micro-batch that only accumulates.
"""
from __future__ import annotations

import contextlib
import functools

from ..optim.optimizer import AdamWTau
from .requires import require

NAME = "AdamWTau"


@functools.lru_cache(maxsize=None)
def _container_class():
    require("torchtitan", "torchtitan")
    from dataclasses import dataclass

    from torchtitan.components.optimizer import OptimizersContainer as Base

    class OptimizersContainer(Base):
        """torchtitan's ``OptimizersContainer`` that also builds ``optimizer_name="AdamWTau"``."""

        @dataclass(kw_only=True, slots=True)
        class Config(Base.Config):
            pass  # a Config of our own: torchtitan's build() makes the class that defines it

        def __init__(self, config, *, model_parts):
            check_param_group_kwargs(config.param_groups)
            Base.__init__(self, config, model_parts=model_parts)

        @staticmethod
        def _resolve_optimizer_factory(name):
            return AdamWTau if name == NAME else Base._resolve_optimizer_factory(name)

        def accumulating(self):
            """Every AdamWTau's ``accumulating()`` at once: run the backward of every micro-batch
            but the last inside it (a no-op for optimizers without ``step_in_backward``)."""
            stack = contextlib.ExitStack()
            for optimizer in self.optimizers:
                if isinstance(optimizer, AdamWTau):
                    stack.enter_context(optimizer.accumulating())
            return stack

    OptimizersContainer.__module__ = __name__
    return OptimizersContainer


OPTIMIZER_ARGUMENTS = ("step_in_backward", "backend", "seed")


def check_param_group_kwargs(param_groups) -> None:
    """Refuse AdamWTau's optimizer-wide arguments in a ``ParamGroupConfig``: torchtitan copies
    ``optimizer_kwargs`` into the group dict, where they would be kept and never read."""
    for i, pg in enumerate(param_groups):
        if pg.optimizer_name != NAME:
            continue
        wrong = [k for k in OPTIMIZER_ARGUMENTS if k in pg.optimizer_kwargs]
        if wrong:
            raise ValueError(
                f"OptimizersContainer: param_groups[{i}] (pattern {pg.pattern!r}) has {wrong[0]!r} in its "
                "optimizer_kwargs, which torchtitan puts into a parameter group, where AdamWTau does not read it. "
                f"It is an argument of the whole optimizer: pass Config(optimizer_factory_kwargs_by_name="
                f"{{{NAME!r}: {{{wrong[0]!r}: ...}}}}) instead")


def __getattr__(name: str):
    # the class subclasses torchtitan's, so it is made when first asked for, not at import
    if name == "OptimizersContainer":
        return _container_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
