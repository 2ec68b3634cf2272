"""The fast tier's covering sets (adamw_tau/testing/covering.py): every pair the product holds."""
from itertools import product

from adamw_tau.testing import covering
from adamw_tau.testing.cases import FAST_HARD_CASES, FLAG_SETS, HARD_CASES, factors
from adamw_tau.testing.parity import PATHS, SCALAR_MODES


def _pairs(rows, singles=()):
    out = set()
    for r in rows:
        out |= covering.covered_by(r, singles)
    return out


def test_pairwise_covers_every_pair_of_a_product():
    rows = [dict(a=a, b=b, c=c, d=d) for a, b, c, d in product(range(4), range(3), range(3), range(2))]
    chosen = [rows[i] for i in covering.pairwise(rows)]
    assert _pairs(chosen) == covering.targets(rows)
    for x, y in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):  # spelled out, not through targets()
        assert {(r[x], r[y]) for r in chosen} == {(r[x], r[y]) for r in rows}
    assert len(chosen) < len(rows) // 3


def test_pairwise_respects_what_the_product_leaves_out():
    """Constraints: only pairs that occur in some row are targets, and only rows are chosen."""
    rows = [dict(p=p, m=m) for p in "xyz" for m in "01" if not (p == "z" and m == "1")]
    chosen = [rows[i] for i in covering.pairwise(rows)]
    assert sorted((r["p"], r["m"]) for r in chosen) == sorted((r["p"], r["m"]) for r in rows)


def test_hard_cases_fast_tier_covers_every_path_and_every_pair():
    assert set(HARD_CASES) == set(product(PATHS, FLAG_SETS, SCALAR_MODES))
    fast = [factors(*c) for c in FAST_HARD_CASES]
    assert {f["path"] for f in fast} == set(PATHS)
    assert _pairs(fast, ("path",)) == covering.targets([factors(*c) for c in HARD_CASES], ("path",))
    for path in PATHS.values():  # each format and master form under every flag set and scalar mode
        for key, value in (("state", str(path.state_dtype)), ("master", str(path.master))):
            assert {f["case"] for f in fast if f[key] == value} == set(FLAG_SETS)
            assert {f["scalars"] for f in fast if f[key] == value} == set(SCALAR_MODES)
    assert len(FAST_HARD_CASES) <= len(HARD_CASES) // 4


def test_the_choice_is_deterministic():
    rows = [factors(*c) for c in HARD_CASES]
    assert covering.pairwise(rows, ("path",)) == covering.pairwise(list(rows), ("path",))
