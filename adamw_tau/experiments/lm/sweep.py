"""``adamw-tau sweep lm``: Wang & Aitchison's two claims on real text, with AdamWTau.

A byte-level TinyGPT (adamw_tau/experiments/lm/tiny_gpt.py) on the Python standard library's source
(adamw_tau/experiments/lm/corpus.py), trained multi-epoch with a cosine schedule (linear warmup over the
first 2% of steps), as in the paper.

dataset  at several dataset sizes (prefixes of the training stream) with the number of epochs
         fixed, sweep τ_epoch (and no decay), for several seeds: the best τ_epoch per size and the
         slope of log best λ = 1/(η·M·τ_epoch) against log size (the rule says −1).
width    μP widths (``mup_param_groups``, base = the narrowest): an lr sweep with λ fixed (torch
         form; the hidden layers' per-step decay lr·λ shrinks with width) against τ_epoch fixed.
         Each width's best lr, and the regret of using the base width's best lr.

Every run is one CSV row, written as soon as it finishes; a rerun skips the rows already there
(same config, corpus and run). ``--part I/K`` runs the I-th of K shares of the grid, balanced by
the FLOP-based time estimate (``estimate_seconds``); once the CSV holds the whole grid, a run
with nothing left to do writes the summary and the PNG.
"""
from __future__ import annotations

import os

import torch

from .. import common
from . import corpus as stdlib_corpus
from .grid import (
    FULL,
    MEDIUM,
    QUICK,
    device_words,
    estimate_seconds,
    job_steps,
    jobs,
    parse_part,
    plan_text,
    run_overhead_s,
    split,
    step_seconds,
)
from .results import append_row, plot, print_summary, read_rows, row_key, summarize
from .train import train_run
from .workers import run_side_by_side

# --- driver ---------------------------------------------------------------------------------


def _run_jobs(todo, cfg, corpus, device, backend, compile, tick, csv_path, base, bar, est, progress, workers=1):
    if workers > 1:
        done = run_side_by_side(todo, cfg, workers, cfg.cpu_threads or 1, device, backend, compile,
                                order_key=lambda j: estimate_seconds(j, cfg))
    else:
        done = ((j, train_run(j, cfg, corpus, device=device, backend=backend, compile=compile, tick=tick)) for j in todo)
    for j, r in done:
        row = {**base, **j, **r}
        append_row(csv_path, row)
        bar.update(int(run_overhead_s(cfg) if workers == 1 else estimate_seconds(j, cfg)))
        if progress:
            msg = (f"  {j['experiment']:7s} N={j['dataset_tokens']} w={j['width']} {j['mode']} lr={j['lr']:.3g} "
                   f"τ_ep={j['tau_epochs']:.3g} seed={j['seed']}: val {row['val_loss']:.4f}  "
                   f"({row['seconds']:.1f} s, {est[id(j)]} steps)")
            bar.write(msg) if hasattr(bar, "write") else print(msg)


def run(out: str, quick: bool = False, device: str = "cpu", part: str | None = None, backend: str | None = None,
        compile: bool = False, progress: bool = True, plan_only: bool = False, medium: bool = False,
        workers: int | None = None) -> dict:
    if quick and medium:
        raise ValueError("--quick and --medium are two grids: give one")
    cfg = QUICK if quick else MEDIUM if medium else FULL
    i, k = parse_part(part)
    on_cpu = torch.device(device).type == "cpu"
    workers = max(1, workers if workers is not None else (cfg.cpu_workers if on_cpu else 1))
    if plan_only:
        text = plan_text(cfg, k, workers)
        print(text)
        return {"plan": text}
    corpus = stdlib_corpus.load()
    info = corpus.describe()
    need = max((*cfg.ds_sizes, cfg.w_tokens)) + 1
    if corpus.train.numel() < need:
        raise ValueError(f"the {cfg.name} grid needs {need} training bytes (dataset sizes {cfg.ds_sizes}, width "
                         f"experiment {cfg.w_tokens}), but this Python's stdlib corpus has {corpus.train.numel()} "
                         f"({info['python']}, sha256 {info['corpus_sha256']})")
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "lm.csv")
    done_rows = read_rows(csv_path)
    other = {r["corpus_sha256"] for r in done_rows if r["config"] == cfg.name} - {info["corpus_sha256"]}
    if other:
        raise SystemExit(f"sweep lm: {csv_path} holds {cfg.name} runs on another corpus (sha256 {', '.join(sorted(other))}; "
                         f"this machine's is {info['corpus_sha256']}, {info['python']}): use another --out")
    done = {row_key(r) for r in done_rows}
    all_jobs = jobs(cfg)
    mine = split(all_jobs, cfg, k)[i - 1]
    base = {"config": cfg.name, **info}
    todo = [j for j in mine if row_key({**base, **j}) not in done]
    est = {id(j): job_steps(j, cfg) for j in todo}
    total_est = sum(estimate_seconds(j, cfg) for j in todo)
    wall = max((sum(estimate_seconds(j, cfg) for j in s) for s in split(todo, cfg, workers)), default=0.0)
    print(f"sweep lm ({cfg.name}) part {i}/{k}: {len(mine)} runs, {len(mine) - len(todo)} already in {csv_path}; "
          f"{len(todo)} to run, {total_est / 60:.1f} min estimated on {'a ' if on_cpu else 'an '}{device_words(cfg)}"
          + (f", {wall / 60:.1f} min wall in {workers} worker processes side by side" if workers > 1 else ""))
    bar = common.progress_bar(max(1, int(round(total_est))), f"sweep lm {i}/{k}", progress)
    per_step = {w: step_seconds(w, cfg) for w in {j["width"] for j in todo}}
    acc = [0.0]

    def tick(job):  # the bar counts estimated seconds, so its rate and ETA follow the estimate's scale
        acc[0] += per_step[job["width"]]
        if acc[0] >= 1.0:
            bar.update(int(acc[0]))
            acc[0] -= int(acc[0])

    threads = torch.get_num_threads()
    if on_cpu and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)  # small matmuls: one thread a process, parts side by side
    try:
        _run_jobs(todo, cfg, corpus, device, backend, compile, tick, csv_path, base, bar, est, progress, workers)
    finally:
        torch.set_num_threads(threads)
    bar.close()
    rows = [r for r in read_rows(csv_path) if r["config"] == cfg.name and r["corpus_sha256"] == info["corpus_sha256"]]
    have = {row_key(r) for r in rows}
    missing = [j for j in all_jobs if row_key({**base, **j}) not in have]
    result = {"csv": csv_path, "missing": len(missing), "corpus": info}
    if missing:
        print(f"sweep lm: {len(all_jobs) - len(missing)} of {len(all_jobs)} runs are in {csv_path}; run the other "
              f"parts (or rerun without --part) for the summary and the PNG")
        return result
    s = summarize(rows, cfg)
    print_summary(s, info, cfg)
    png = os.path.join(out, "lm.png")
    plot(s, cfg, png, info)
    result.update(summary=s, png=png)
    return result


def main(args) -> int:
    quick, medium = bool(args.quick), bool(getattr(args, "medium", False))
    device = args.device or "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("sweep lm: --device cuda asked for, but torch sees no CUDA device")
    try:
        r = run(args.out, quick=quick, device=device, part=args.part, backend=args.backend, compile=args.compile,
                progress=not args.no_progress, plan_only=args.plan, medium=medium,
                workers=getattr(args, "workers", None))
    except ValueError as e:
        raise SystemExit(f"sweep lm: {e}")
    if "png" in r:
        print(f"wrote {r['png']}")
    if "csv" in r:
        print(f"wrote {r['csv']}")
    return 0
