"""Covering sets: the fast test tier's share of a parity product.

A parity test's full product (dtype path x flag set x scalar mode, on one backend) grows with
every format and flag. The fast tier runs a *covering set* of it instead: rows chosen from the
same product so that every pair of factor values that occurs anywhere in the product occurs in
at least one chosen row, and every value of the factors named in ``singles`` occurs at least once
(a factor named there is left out of the pairs: every dtype path once, not every path under every
flag set).
The full tier (``pytest --full``) runs the whole product; both come from one list of rows, so
a new path or flag set lands in both at once.

Factors are the rows' attributes, not their names: a dtype path counts as its param dtype,
state format, master form and rounding, so that pairs such as (8-bit states, GradScaler skip)
are covered without running every path under every flag set.

[note: greedy] The choice is the classic greedy one (each step takes the row that covers the
most pairs not yet covered; ties go to the earlier row), deterministic, so a test id names the
same case on every machine. It is not minimal, only small: for the 14 paths x 4 flag sets x 2
scalar modes it keeps 21 of 112 rows (tests/core/test_covering.py).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations

Row = Mapping[str, Hashable]


def targets(rows: Sequence[Row], singles: Sequence[str] = ()) -> set[tuple]:
    """What a covering set of ``rows`` must contain: every pair of (factor, value) that occurs
    together in some row (factors in ``singles`` left out), and every (factor, value) of the
    factors in ``singles``."""
    out: set[tuple] = set()
    for row in rows:
        out |= covered_by(row, singles)
    return out


def covered_by(row: Row, singles: Sequence[str] = ()) -> set[tuple]:
    """The targets one row covers."""
    items = sorted((kv for kv in row.items() if kv[0] not in singles), key=lambda kv: kv[0])
    pairs = {(a, b) for a, b in combinations(items, 2)}
    return pairs | {((k, row[k]),) for k in singles if k in row}


def pairwise(rows: Sequence[Row], singles: Sequence[str] = ()) -> list[int]:
    """Indices (ascending) of a subset of ``rows`` that covers ``targets(rows, singles)``."""
    left = targets(rows, singles)
    covers = [covered_by(row, singles) for row in rows]
    chosen: list[int] = []
    while left:
        best = max(range(len(rows)), key=lambda i: (len(covers[i] & left), -i))
        chosen.append(best)
        left -= covers[best]
    return sorted(chosen)
