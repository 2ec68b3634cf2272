"""``opt.state`` as the one truth: dicts that say when they change, so every cache of them can ask.

[note: why the state dicts are tracked]
A step must not cost a dictionary walk per tensor: the buckets (buckets.py) keep the
states' tensors in lists and the launch tables keep their addresses. Those are caches of
``opt.state``, and a user may change ``opt.state`` the ways torch.optim.AdamW allows: clear
an entry, delete it, replace a tensor, assign a new dict, replace ``opt.state`` itself,
load a state dict. Checking every entry each step cost 0.81 ms for 2000 tensors on the
2-core CPU machine (a whole step costs 0.68 ms), so instead every change is counted where
it happens: ``OptimizerState`` (the outer dict) and ``ParamState`` (one parameter's) bump one
process-wide counter, ``CHANGES``, on every write. A cache records the count it was built
at and is rebuilt when the count moved: one integer compare a step.

What the counter cannot see, and how it is covered:
- a plain dict a user assigned (``opt.state[p] = {...}``, or ``opt.state`` itself): it is
  kept as given, so the user's reference still reaches it, and the buckets compare its
  entries with what they hold at every step (only for such dicts: buckets.py);
- in-place writes into a state's tensors (``exp_avg.copy_(x)``): the kernels step those
  very tensors, so they need no rebuild; a write to ``step`` is caught by the step counts
  (buckets.py, "[note: step counts]").

Our own writes (creating a state, pointing ``step`` at the bucket's counts) go through
``dict.__setitem__`` and count nothing. ``plain`` turns the tracked dicts back into plain
ones for ``state_dict()``, so a checkpoint loads with ``torch.load(weights_only=True)`` and
without adamw_tau installed.
"""
from __future__ import annotations

from collections import defaultdict

# How many writes any tracked state dict has seen. One counter for every optimizer: a
# write is rare (a user's edit, a load), and a count that moves for another optimizer
# costs that one a rebuild, never a wrong bit.
CHANGES = [0]


def count_change() -> None:
    """Record that some tracked state changed: every cache of one rebuilds at its next step."""
    CHANGES[0] += 1


class CountedWrites:
    """Every write through a dict's own methods counts (mixed into ParamState and OptimizerState)."""

    __slots__ = ()

    def __setitem__(self, key, value):
        count_change()
        super().__setitem__(key, value)

    def __delitem__(self, key):
        count_change()
        super().__delitem__(key)

    def __ior__(self, other):
        count_change()
        return super().__ior__(other)

    def clear(self):
        count_change()
        super().clear()

    def pop(self, *args):
        count_change()
        return super().pop(*args)

    def popitem(self):
        count_change()
        return super().popitem()

    def setdefault(self, key, default=None):
        count_change()
        return super().setdefault(key, default)

    def update(self, *args, **kwargs):
        count_change()
        super().update(*args, **kwargs)


class ParamState(CountedWrites, dict):
    """One parameter's state (``step``, ``exp_avg``, ...): a dict whose every write is counted."""

    __slots__ = ()

    def __reduce__(self):  # pickles and deep-copies as a ParamState with its items
        return (ParamState, (dict(self),))


class OptimizerState(CountedWrites, defaultdict):
    """``opt.state``: parameter -> ParamState, created on first use, every write counted."""

    def __init__(self, items=()):
        super().__init__(ParamState)
        dict.update(self, items)

    def __missing__(self, key):
        count_change()
        value = ParamState()
        dict.__setitem__(self, key, value)
        return value

    def __reduce__(self):  # pickles and deep-copies as an OptimizerState with its items
        return (OptimizerState, (dict(self),))


def tracked(state) -> OptimizerState:
    """A new OptimizerState with ``state``'s entries, each parameter's dict a ParamState holding
    the same tensors. For states no user holds a reference to: ones torch's load_state_dict,
    pickle or deepcopy just made."""
    return OptimizerState({k: ParamState(v) if type(v) is dict else v for k, v in state.items()})


def plain(packed: dict) -> dict:
    """A state_dict()'s ``state`` with plain dicts for values (checkpoints name no class of ours)."""
    return {k: dict(v) if isinstance(v, ParamState) else v for k, v in packed.items()}
