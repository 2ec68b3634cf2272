"""``adamw-tau sweep lm-fair``'s driver: runs a design's grid (resumable, one CSV row a run), then
summarizes it (adamw_tau/experiments/lm/fair_results.py)."""
from __future__ import annotations

import os

import torch

from . import corpus as stdlib_corpus
from .fair import PILOT_TAUS, FairConfig, jobs, pilot_jobs
from .fair_results import interp_optimum, plot, print_summary, summarize
from .results import append_row, read_rows, row_key
from .train import train_run
from .workers import run_side_by_side


def run(out: str, cfg: FairConfig, design: str, device: str = "cpu", backend=None, progress: bool = True,
        workers: int | None = None, pilot: bool = False, summary_only: bool = False) -> dict:
    """Run the design's grid (resumable, appending to ``out/lm_fair_<design>.csv``), then summarize it;
    ``summary_only``: run nothing, summarize the runs already there (a partial grid included)."""
    corpus = stdlib_corpus.load()
    info = corpus.describe()
    if pilot and design != "dataset":
        raise ValueError("--pilot runs the dataset design's middle size, one seed: give --design dataset")
    all_jobs = pilot_jobs(cfg) if pilot else jobs(cfg, design)
    need = max(j["dataset_tokens"] for j in all_jobs) + 1
    if corpus.train.numel() < need:
        raise ValueError(f"the {cfg.name} grid needs {need} training bytes, but this Python's stdlib corpus has "
                         f"{corpus.train.numel()} ({info['python']})")
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, f"lm_fair_{design}{'_pilot' if pilot else ''}.csv")
    base = {"config": cfg.name, **info}
    done = {row_key(r) for r in read_rows(csv_path)}
    todo = [j for j in all_jobs if row_key({**base, **j}) not in done]
    rank = {id(j): k for k, j in enumerate(all_jobs)}  # the grid's order: seed-major
    lm = cfg.lm()
    on_cpu = torch.device(device).type == "cpu"
    workers = max(1, workers if workers is not None else (cfg.cpu_workers if on_cpu else 1))
    print(f"sweep lm-fair {design} ({cfg.name}): {len(all_jobs)} runs, {len(all_jobs) - len(todo)} already in "
          f"{csv_path}; {len(todo)} to run" + (" (--summary: none run now)" if summary_only and todo else ""), flush=True)
    if summary_only:
        todo = []
    threads = torch.get_num_threads()
    if workers > 1:
        done_iter = run_side_by_side(todo, lm, workers, cfg.cpu_threads or 1, device, backend, False,
                                     order_key=lambda j: -rank[id(j)])
    else:
        if on_cpu and cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        done_iter = ((j, train_run(j, lm, corpus, device=device, backend=backend)) for j in todo)
    try:
        for j, r in done_iter:
            row = {**base, **j, **r}
            append_row(csv_path, row)
            if progress:
                print(f"  {j['experiment']} N={j['dataset_tokens']} w={j['width']} {j['mode']} lr={j['lr']:.3g} "
                      f"τ_ep={j['tau_epochs']:.3g} seed={j['seed']}: val {row['val_loss']:.4f} "
                      f"({row['seconds']:.1f} s)", flush=True)
    finally:
        torch.set_num_threads(threads)  # a caller's thread count is not the sweep's to keep
    rows = [r for r in read_rows(csv_path) if r["config"] == cfg.name and r["corpus_sha256"] == info["corpus_sha256"]]
    if pilot:
        tau = {r["tau_epochs"]: r["val_loss"] for r in rows if r["mode"] == "tau"}
        none = [r["val_loss"] for r in rows if r["mode"] == "none"]
        grid = [t for t in PILOT_TAUS if t in tau]
        opt = interp_optimum(grid, [tau[t] for t in grid])
        print(f"pilot ({cfg.name}), N = {cfg.ds_pilot_size}, {cfg.ds_steps} steps: val by τ_epoch "
              + "  ".join(f"{t:g}: {tau[t]:.3f}" for t in grid) + f"  none: {none[0] if none else float('nan'):.3f}")
        print(f"  interpolated best τ_epoch {opt['x']:.3g}" + (f" [at the {opt['edge']} edge]" if opt["edge"] else "")
              + f": set ds_pilot_tau = {opt['x']:.3g} for the grid (config {cfg.name})")
        return {"csv": csv_path, "png": None, "pilot": opt}
    todo_left = [j for j in all_jobs if row_key({**base, **j}) not in {row_key(r) for r in rows}]
    missing = len(todo_left)
    s = summarize(rows, cfg, design, corpus)
    if missing:
        print(f"partial: {len(all_jobs) - missing} of {len(all_jobs)} runs; rerun without --summary to run the rest")
    print_summary(s, cfg, design, info)
    png = csv_path[:-4] + ".png"
    plot(s, cfg, design, png, info)
    return {"csv": csv_path, "png": png, "summary": s}
