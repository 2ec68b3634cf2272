"""Runs of the LM sweep side by side in worker processes (one per core, one thread each): small
models gain little from a second thread in one process, and a lot from a second process."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp

import torch

from . import corpus as stdlib_corpus
from .train import train_run

_STATE: dict = {}


def _init(threads: int) -> None:
    torch.set_num_threads(threads)
    _STATE["corpus"] = stdlib_corpus.load()


def _one(job: dict, cfg, device: str, backend, compile: bool) -> dict:
    return train_run(job, cfg, _STATE["corpus"], device=device, backend=backend, compile=compile)


def run_side_by_side(todo: list[dict], cfg, workers: int, threads: int, device: str, backend, compile: bool,
                     order_key=None):
    """Yield (job, result) as each run finishes. Runs start longest first (``order_key``, e.g. the
    estimate), so the workers finish together; spawn, not fork, as forking after torch's thread pool
    has started can hang."""
    order = sorted(todo, key=order_key, reverse=True) if order_key else list(todo)
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init,
                                initargs=(max(1, threads),)) as pool:
        futures = {pool.submit(_one, j, cfg, device, backend, compile): j for j in order}
        for f in cf.as_completed(futures):
            yield futures[f], f.result()
