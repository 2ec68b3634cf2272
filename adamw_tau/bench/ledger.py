"""The ledger of the memory tables: bytes per category (params, grads, states, master,
remainder, scales, other) of the tensors a set of parameters and an optimizer hold, each
untyped storage counted once (memory.py's note says in what order and why).
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

CATEGORIES = ("params", "grads", "states", "master", "remainder", "scales", "other")
MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "state1", "state2")  # ours and torch's; bnb's
SCALE_WORDS = ("scale", "absmax", "qmap")


def category(key: str, inner: str | None = None) -> str:
    """Where an opt.state entry (``inner``: the attribute of a subclass's inner tensor) counts."""
    name = f"{key}.{inner}".lower() if inner else key.lower()
    if "remainder" in name:
        return "remainder"
    if "master" in name:
        return "master"
    if any(w in name for w in SCALE_WORDS):
        return "scales"
    if key.startswith(MOMENT_KEYS):  # torchao: exp_avg.codes (its .scale and .qmap are scales)
        return "states"
    return "other"  # step counters, and anything no rule above names


def leaves(t: torch.Tensor, inner: str | None = None):
    """(attribute, plain tensor) pairs: a tensor subclass stands for the tensors inside it."""
    if is_traceable_wrapper_subclass(t):
        for attr in t.__tensor_flatten__()[0]:
            yield from leaves(getattr(t, attr), attr)
    else:
        yield inner, t


@dataclass
class Ledger:
    """Bytes per category, each untyped storage counted once."""
    bytes: dict = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    seen: set = field(default_factory=set)
    state_itemsizes: set = field(default_factory=set)  # element sizes of the moments' tensors

    def add(self, t: torch.Tensor, cat: str | None = None, key: str = "") -> None:
        for inner, leaf in leaves(t):
            where = cat or category(key, inner)
            if where == "states":
                self.state_itemsizes.add(leaf.element_size())
            storage = leaf.untyped_storage()
            ident = (str(storage.device), storage.data_ptr())
            if storage.nbytes() == 0 or ident in self.seen:
                continue
            self.seen.add(ident)
            self.bytes[where] += storage.nbytes()


_ATOMS = (str, bytes, int, float, complex, bool, type(None), type, types.ModuleType, torch.dtype,
          torch.device, torch.Size)


def reachable_tensors(obj, seen: set | None = None, depth: int = 0):
    """Every tensor reachable from ``obj`` through containers and plain objects' attributes
    (not through functions, hooks or modules, which reach the whole program)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 12 or isinstance(obj, _ATOMS):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k, v in list(obj.items()):
            yield from reachable_tensors(k, seen, depth + 1)
            yield from reachable_tensors(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in list(obj):
            yield from reachable_tensors(v, seen, depth + 1)
    elif not callable(obj):
        for v in list(getattr(obj, "__dict__", {}).values()) + \
                [getattr(obj, s, None) for s in getattr(type(obj), "__slots__", ())]:
            yield from reachable_tensors(v, seen, depth + 1)


def count(params, opt) -> Ledger:
    ledger = Ledger()
    for p in params:
        ledger.add(p, "params")
    for p in params:
        if p.grad is not None:
            ledger.add(p.grad, "grads")
    for p in params:
        for key, value in opt.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                ledger.add(value, key=str(key))
    for t in reachable_tensors(opt):
        ledger.add(t, "other")
    return ledger
