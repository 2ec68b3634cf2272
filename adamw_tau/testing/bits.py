"""Comparing tensors word for word, as the contract does (docs/numerics.md): the same bits,
two NaNs equal whatever their payloads, nothing else excused (not -0.0 against +0.0).

``torch.equal`` and ``allclose`` are not this: ``torch.equal`` takes -0.0 for +0.0 and no
NaN for a NaN; ``allclose`` excuses whole ulps.
"""
from __future__ import annotations

import torch

_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def words(t: torch.Tensor) -> torch.Tensor:
    """``t``'s words as integers, flat, on the CPU."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(_INT[t.element_size()])


def differing(x: torch.Tensor, y: torch.Tensor) -> int:
    """Words in which ``x`` and ``y`` differ (NaN against NaN excused). A dtype or shape
    mismatch counts every word: it is not the same bits."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return max(x.numel(), y.numel(), 1)
    x, y = x.detach().cpu(), y.detach().cpu()
    differ = words(x) != words(y)
    if x.is_floating_point():
        differ &= ~(torch.isnan(x) & torch.isnan(y)).reshape(-1)
    return int(differ.sum())


def differing_lists(xs, ys) -> int:
    """``differing`` summed over two lists of tensors; lists of other lengths differ."""
    xs, ys = list(xs), list(ys)
    if len(xs) != len(ys):
        return max(sum(t.numel() for t in xs + ys), 1)
    return sum(differing(x, y) for x, y in zip(xs, ys))


def differing_optimizers(params_a, opt_a, params_b, opt_b) -> dict:
    """Per parameter index and key, the words in which two optimizers' params and states
    differ; every key of either state is compared (a key only one side has differs in full).
    Empty if they are the same bits."""
    out = {}
    for i, (a, b) in enumerate(zip(params_a, params_b, strict=True)):
        n = differing(a, b)
        if n:
            out[(i, "param")] = n
        sa, sb = opt_a.state.get(a, {}), opt_b.state.get(b, {})
        for key in sorted(set(sa) | set(sb)):
            if key not in sa or key not in sb:
                out[(i, key)] = "missing on one side"
                continue
            x, y = sa[key], sb[key]
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
                n = differing(x.float() if key == "step" else x, y.float() if key == "step" else y)
            else:
                n = int(x != y)
            if n:
                out[(i, key)] = n
    return out
