"""torchtitan's optimizer container with AdamWTau.

torchtitan (0.3) builds each parameter group's optimizer by name in
``OptimizersContainer._resolve_optimizer_factory``, which knows "Adam", "AdamW" and
"DistMuon" and has no registry. ``OptimizersContainer`` here is torchtitan's with "AdamWTau"
added; its ``Config`` builds it. torchtitan puts ``fused=`` and ``foreach=`` into every group
(from ``implementation``): AdamWTau accepts them and runs its own kernels.
"""
from __future__ import annotations

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

        @staticmethod
        def _resolve_optimizer_factory(name):
            return AdamWTau if name == NAME else Base._resolve_optimizer_factory(name)

    OptimizersContainer.__module__ = __name__
    return OptimizersContainer


def __getattr__(name: str):
    # the class subclasses torchtitan's, so it is made when first asked for, not at import
    if name == "OptimizersContainer":
        return _container_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
