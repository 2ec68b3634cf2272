"""A text corpus every machine has: the running Python's standard library, read as bytes.

Definition (the same rule on Debian's split packages and on a full pyenv/python.org build):
the ``*.py`` files under ``sysconfig.get_paths()["stdlib"]``, by relative path, leaving out

- directories named ``test``, ``tests``, ``idle_test`` anywhere, and ``site-packages`` /
  ``dist-packages`` (installed packages, not the stdlib);
- top-level packages that distributions ship separately or that come and go between versions:
  ``idlelib``, ``tkinter``, ``turtledemo``, ``lib2to3``, ``distutils``, ``ensurepip``, ``venv``,
  ``pydoc_data`` (a generated help-text table), ``__phello__``, ``config-*``;
- generated or distribution-specific files: ``_sysconfigdata*.py``, ``sitecustomize.py``,
  ``usercustomize.py``, ``_distutils_system_mod.py``.

Measured: 506 files, 9.2 MB on CPython 3.11.7 (pyenv). The content still depends on the Python
version, so every result carries the corpus's size and a sha256 of its names and bytes.

Split: every 10th file in sorted order is validation; the rest, ordered by the sha256 of their
paths (a fixed shuffle, so any prefix mixes all packages), concatenated, is the training stream.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
from dataclasses import dataclass

import torch

EXCLUDED_ANYWHERE = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
EXCLUDED_TOP = frozenset({"idlelib", "tkinter", "turtledemo", "lib2to3", "distutils", "ensurepip", "venv",
                          "pydoc_data", "__phello__"})
EXCLUDED_FILES = frozenset({"sitecustomize.py", "usercustomize.py", "_distutils_system_mod.py"})
VAL_EVERY = 10


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def stdlib_files(root: str | None = None) -> list[str]:
    """Sorted relative paths (with '/') of the corpus's files."""
    root = root or stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        top = rel_dir == "."
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_ANYWHERE
                       and not (top and (d in EXCLUDED_TOP or d.startswith("config-")))]
        for f in filenames:
            if f.endswith(".py") and f not in EXCLUDED_FILES and not f.startswith("_sysconfigdata"):
                out.append(f if top else f"{rel_dir.replace(os.sep, '/')}/{f}")
    return sorted(out)


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor      # uint8, the training stream
    val: torch.Tensor        # uint8, the validation stream
    n_files: int
    n_val_files: int
    total_bytes: int
    sha256: str              # first 16 hex digits over (path, bytes) of every file in sorted order
    python: str

    def describe(self) -> dict:
        return {"corpus_bytes": self.total_bytes, "corpus_files": self.n_files, "corpus_sha256": self.sha256,
                "python": self.python, "train_bytes": int(self.train.numel()), "val_bytes": int(self.val.numel())}


@functools.lru_cache(maxsize=4)
def load(root: str | None = None) -> Corpus:
    root = root or stdlib_root()
    files = stdlib_files(root)
    if not files:
        raise RuntimeError(f"no standard-library .py files found under {root}")
    h = hashlib.sha256()
    data = {}
    for rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            b = f.read()
        data[rel] = b
        h.update(rel.encode() + b"\0" + len(b).to_bytes(8, "little"))
        h.update(b)
    val_files = [rel for i, rel in enumerate(files) if i % VAL_EVERY == VAL_EVERY - 1]
    val_set = set(val_files)
    train_files = sorted((rel for rel in files if rel not in val_set),
                         key=lambda r: hashlib.sha256(r.encode()).hexdigest())

    def stream(names):
        return torch.frombuffer(bytearray(b"".join(data[n] for n in names)), dtype=torch.uint8)

    return Corpus(train=stream(train_files), val=stream(val_files), n_files=len(files), n_val_files=len(val_files),
                  total_bytes=sum(len(b) for b in data.values()), sha256=h.hexdigest()[:16],
                  python=f"{sys.implementation.name} {sys.version.split()[0]}")


def eval_windows(val: torch.Tensor, ctx: int, windows: int) -> torch.Tensor:
    """The (windows, ctx + 1) byte windows every evaluation scores: evenly spaced starts over ``val``."""
    starts = torch.linspace(0, val.numel() - ctx - 2, windows).long()
    return val[starts[:, None] + torch.arange(ctx + 1)[None]]
