"""Mutation check: plant each small bug of catalog.py in a fresh copy of the working tree and
see the tests catch it. Not part of the pytest run (too slow for CI: each mutation of csrc/
rebuilds the C++ extension, about a minute and a half on 2 cores).

    python tests/mutations/run.py                 # every mutation; exit 0 only if all are caught
    python tests/mutations/run.py --fast          # the same against the fast tier (no slow tests)
    python tests/mutations/run.py --only ID[,ID]  # some of them
    python tests/mutations/run.py --list

What it does: copies the tracked and untracked-but-not-ignored files (``git ls-files -co
--exclude-standard``) into a temporary directory, runs every test set the catalog names on
that unmutated copy (they must pass, else it stops), then for each mutation copies the tree
afresh, applies the edits (each old text must occur exactly once), and runs the mutation's
test set with ``-x`` under ``CI=true`` (so an unavailable backend fails instead of skipping),
with its own TORCH_EXTENSIONS_DIR when it touches csrc/ (the extension is rebuilt from the
mutated source). The test sets run in the full tier (``--full``), or with ``--fast`` in the fast
tier only: the slow-marked tests of each set are left out, as the README's test command leaves
them out, so a mutation caught there is caught by what a person runs after every edit. A
mutation is caught when pytest reports failed tests; a csrc mutation whose
build fails, or a pytest error, counts as not caught. It prints a table (markdown) and
writes it beside the copies.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from catalog import MUTATIONS, TESTS  # noqa: E402


def repo_root() -> Path:
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=HERE, capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def copy_tree(root: Path, dest: Path) -> None:
    """The working tree's files (tracked, and untracked but not ignored), modification times kept
    (so an unchanged csrc/ does not look newer than a shared build of it)."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = root / name
        if not src.is_file():  # deleted in the working tree but still tracked
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)


def apply(tree: Path, mutation: dict) -> str | None:
    """Apply the edits; None, or why they do not apply (the catalog is stale)."""
    path = tree / mutation["file"]
    text = path.read_text()
    for old, new in mutation["edits"]:
        n = text.count(old)
        if n != 1:
            return f"{old!r} occurs {n} times in {mutation['file']}"
        text = text.replace(old, new)
    path.write_text(text)
    return None


def run_tests(tree: Path, args: list[str], ext_dir: Path, log: Path, timeout: int,
              fast: bool = False) -> tuple[int, str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), TORCH_EXTENSIONS_DIR=str(ext_dir), CI="true",
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("TRITON_INTERPRET", None)  # the tree's conftest sets it
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "-W", "ignore", "-rf", *([] if fast else ["--full"]), *args]
    start = time.time()
    try:
        out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        rc, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, f"timed out after {timeout} s\n{(e.stdout or b'')[-5000:]!r}"
    log.write_text(text)
    return rc, text, time.time() - start


def summary(text: str) -> str:
    lines = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return lines[-1].strip("= ") if lines else "(no summary)"


def first_failure(text: str) -> str:
    m = re.search(r"^FAILED (\S+)", text, re.M)
    return m.group(1) if m else ""


def verdict(rc: int, text: str, touches_csrc: bool) -> str:
    if touches_csrc and ("building the extension failed" in text or "extension unavailable" in text):
        return "BUILD FAILED"
    # pytest-xdist (-n auto in addopts) answers -x with exit 2 ("xdist.dsession.Interrupted: stopping
    # after 1 failures"), not 1; a FAILED line says a test failed, not a collection or usage error
    if rc in (1, 2) and first_failure(text):
        return "caught"
    if rc == 0:
        return "SURVIVED"
    return f"ERROR (pytest exit {rc})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated mutation ids")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per test run")
    ap.add_argument("--skip-baseline", action="store_true", help="do not run the unmutated tree first")
    ap.add_argument("--fast", action="store_true", help="run each test set in the fast tier (slow tests left out)")
    opts = ap.parse_args()
    todo = MUTATIONS
    if opts.only:
        wanted = opts.only.split(",")
        unknown = set(wanted) - {m["id"] for m in MUTATIONS}
        if unknown:
            ap.error(f"unknown mutation ids: {sorted(unknown)}")
        todo = [m for m in MUTATIONS if m["id"] in wanted]
    if opts.list:
        for m in todo:
            print(f"{m['id']:40} {m['file']:35} {m['rule']}")
        return 0

    root = repo_root()
    work = Path(tempfile.mkdtemp(prefix="adamw_tau_mutants_"))
    tree, base_ext = work / "tree", work / "ext-base"
    tier = "fast tier" if opts.fast else "full tier"
    print(f"adamw_tau mutation check: {len(todo)} mutations against the {tier}, working in {work}", flush=True)
    if not opts.skip_baseline:
        copy_tree(root, tree)
        for name in sorted({m["tests"] for m in todo}):
            rc, text, secs = run_tests(tree, TESTS[name], base_ext, work / f"baseline-{name}.log", opts.timeout,
                                       opts.fast)
            print(f"baseline {name:10} exit {rc} in {secs:.0f} s: {summary(text)}", flush=True)
            if rc != 0:
                print(f"the unmutated tree fails test set {name!r}: see {work / f'baseline-{name}.log'}")
                return 2
    rows = []
    for i, m in enumerate(todo, 1):
        copy_tree(root, tree)
        problem = apply(tree, m)
        touches_csrc = m["file"].startswith("csrc/")
        if problem:
            rows.append((m, "NOT APPLIED", problem, "", 0.0))
        else:
            ext = work / f"ext-{m['id']}" if touches_csrc else base_ext
            rc, text, secs = run_tests(tree, TESTS[m["tests"]], ext, work / f"{m['id']}.log", opts.timeout,
                                        opts.fast)
            rows.append((m, verdict(rc, text, touches_csrc), summary(text), first_failure(text), secs))
            if touches_csrc:
                shutil.rmtree(ext, ignore_errors=True)
        m_, result, summ, by, secs = rows[-1]
        print(f"[{i}/{len(todo)}] {m['id']}: {result} ({summ}; {by}) {secs:.0f} s", flush=True)

    table = ["| # | mutation | rule | file | tests run (set: pytest summary) | result | caught by (first failure) |",
             "|---|---|---|---|---|---|---|"]
    for i, (m, result, summ, by, secs) in enumerate(rows, 1):
        table.append(f"| {i} | `{m['id']}` | {m['rule']} | `{m['file']}` | {m['tests']}: {summ} | {result} | "
                     f"`{by}` |" if by else f"| {i} | `{m['id']}` | {m['rule']} | `{m['file']}` | {m['tests']}: {summ} "
                     f"| {result} | |")
    report = "\n".join(table)
    (work / "report.md").write_text(report + "\n")
    print("\n" + report)
    caught = sum(r[1] == "caught" for r in rows)
    print(f"\n{caught} of {len(rows)} mutations caught; report and logs in {work}")
    if not opts.keep and caught == len(rows):
        shutil.rmtree(tree, ignore_errors=True)
        shutil.rmtree(base_ext, ignore_errors=True)
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
