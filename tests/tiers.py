"""The two test tiers, for the tests' parametrizations.

The fast tier (``python -m pytest -q``, the README's command) runs every test not marked
``slow``; the full tier (``python -m pytest -q --full``, which CI runs too) runs them all. A
parity product enters both through ``tiered``: the rows of its covering set run in the fast
tier, the rest carry the ``slow`` mark. tests/conftest.py does the selecting.
"""
from __future__ import annotations

from collections.abc import Sequence

import pytest


def tiered(cases: Sequence[tuple], fast: Sequence[tuple]) -> list:
    """``cases`` as pytest params, those not in ``fast`` marked slow (full tier only)."""
    keep = set(fast)
    missing = keep - set(cases)
    assert not missing, f"fast cases not in the product: {sorted(missing)}"
    return [pytest.param(*c, marks=() if c in keep else pytest.mark.slow) for c in cases]
