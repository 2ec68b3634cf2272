"""``adamw-tau sweep lm``: Wang & Aitchison's two claims on real text, with AdamWTau.

A byte-level TinyGPT (adamw_tau/tiny_gpt.py) on the Python standard library's source
(adamw_tau/stdlib_corpus.py), trained multi-epoch with a cosine schedule (linear warmup over the
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

import csv
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import AdamWTau, mup_param_groups
from . import stdlib_corpus
from .sweeps import _bar, _geom, _plt
from .tiny_gpt import TinyGPT, flops_per_token


@dataclass(frozen=True)
class LMConfig:
    name: str
    layers: int
    ctx: int
    batch: int
    head_dim: int
    warmup_frac: float
    val_windows: int
    # dataset experiment
    ds_width: int
    ds_lr: float
    ds_sizes: tuple
    ds_epochs: int
    ds_taus: tuple
    ds_seeds: int
    # width experiment
    w_widths: tuple
    w_lrs: tuple
    w_tokens: int
    w_epochs: int
    w_tau_epochs: float
    w_ref_lr: float
    w_seeds: int


QUICK = LMConfig(name="quick", layers=2, ctx=32, batch=16, head_dim=8, warmup_frac=0.02, val_windows=256,
                 ds_width=32, ds_lr=1e-2, ds_sizes=(2048, 8192, 32768), ds_epochs=4,
                 ds_taus=(0.125, 0.5, 2.0, 8.0), ds_seeds=2,
                 w_widths=(8, 16, 32, 64), w_lrs=(8e-3, 3.2e-2, 1.28e-1), w_tokens=8192, w_epochs=3,
                 w_tau_epochs=1.0, w_ref_lr=3.2e-2, w_seeds=1)

FULL = LMConfig(name="full", layers=4, ctx=256, batch=64, head_dim=32, warmup_frac=0.02, val_windows=512,
                ds_width=256, ds_lr=1e-3, ds_sizes=(250_000, 500_000, 1_000_000, 2_000_000, 4_000_000), ds_epochs=8,
                ds_taus=(0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), ds_seeds=2,
                w_widths=(64, 128, 256, 512), w_lrs=tuple(_geom(3e-4, 3e-2, 6)), w_tokens=4_000_000, w_epochs=3,
                w_tau_epochs=1.0, w_ref_lr=3e-3, w_seeds=1)

CONFIGS = {"quick": QUICK, "full": FULL}

COLUMNS = ["config", "experiment", "dataset_tokens", "width", "mode", "lr", "tau_epochs", "weight_decay", "seed",
           "iters_per_epoch", "steps", "epochs", "train_loss", "val_loss", "seconds", "device",
           "corpus_bytes", "corpus_files", "corpus_sha256", "python"]
KEY = ("config", "experiment", "dataset_tokens", "width", "mode", "lr", "tau_epochs", "seed", "corpus_sha256")

# --- the plan: jobs, their cost, parts ------------------------------------------------------

# Calibration (the H100 measurement, batch 64 x ctx 256, 4 layers, bf16 autocast, eager):
# 1.5M tokens/s at widths 128-256, 1.1M at 512, 0.5M at 1024, and about 10 ms a step at least. A
# step is costed as a launch-bound floor plus its FLOPs at an effective rate: t = 11 ms + flops /
# 160 TFLOP/s gives 1.40M / 1.23M / 0.84M / 0.38M tokens/s at 128 / 256 / 512 / 1024, slower than
# measured by 7-25%, so a part's estimate errs long.
STEP_FLOOR_S = 0.011
EFFECTIVE_FLOPS = 160e12
RUN_OVERHEAD_S = 2.0   # model build, evaluation
PART_OVERHEAD_S = 30.0  # CUDA context, kernel compilation, corpus load: once per part


def steps_per_epoch(tokens: int, cfg: LMConfig) -> int:
    return (tokens // cfg.ctx) // cfg.batch


def jobs(cfg: LMConfig) -> list[dict]:
    out = []
    for seed in range(cfg.ds_seeds):
        for n in cfg.ds_sizes:
            for tau in (*cfg.ds_taus, None):
                if tau is not None and tau * steps_per_epoch(n, cfg) < 1.0:
                    continue  # τ_iter < 1 would decay by more than the weight in one step
                out.append(dict(experiment="dataset", dataset_tokens=n, width=cfg.ds_width,
                                mode="none" if tau is None else "tau", lr=cfg.ds_lr,
                                tau_epochs=float("nan") if tau is None else tau, seed=seed))
    for seed in range(cfg.w_seeds):
        for mode in ("lambda_fixed", "tau_fixed"):
            for w in cfg.w_widths:
                for lr in cfg.w_lrs:
                    out.append(dict(experiment="width", dataset_tokens=cfg.w_tokens, width=w, mode=mode, lr=lr,
                                    tau_epochs=cfg.w_tau_epochs, seed=seed))
    return out


def job_steps(job: dict, cfg: LMConfig) -> int:
    epochs = cfg.ds_epochs if job["experiment"] == "dataset" else cfg.w_epochs
    return epochs * steps_per_epoch(job["dataset_tokens"], cfg)


def step_seconds(width: int, cfg: LMConfig) -> float:
    return STEP_FLOOR_S + flops_per_token(width, cfg.layers, cfg.ctx) * cfg.batch * cfg.ctx / EFFECTIVE_FLOPS


def estimate_seconds(job: dict, cfg: LMConfig) -> float:
    """Estimated H100 seconds for one run (see STEP_FLOOR_S, EFFECTIVE_FLOPS)."""
    return RUN_OVERHEAD_S + job_steps(job, cfg) * step_seconds(job["width"], cfg)


def split(all_jobs: list[dict], cfg: LMConfig, parts: int) -> list[list[dict]]:
    """Longest-estimate-first onto the least loaded part: deterministic, and balanced by estimate."""
    loads = [0.0] * parts
    out: list[list[dict]] = [[] for _ in range(parts)]
    order = sorted(range(len(all_jobs)), key=lambda i: (-estimate_seconds(all_jobs[i], cfg), i))
    for i in order:
        k = min(range(parts), key=lambda p: (loads[p], p))
        out[k].append(all_jobs[i])
        loads[k] += estimate_seconds(all_jobs[i], cfg)
    for p in out:
        p.sort(key=all_jobs.index)
    return out


def parse_part(text: str | None) -> tuple[int, int]:
    if text is None:
        return 1, 1
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--part must look like I/K (e.g. 2/5), got {text!r}") from None
    if not (k >= 1 and 1 <= i <= k):
        raise ValueError(f"--part I/K needs 1 <= I <= K, got {text!r}")
    return i, k


def plan_text(cfg: LMConfig, parts: int) -> str:
    all_jobs = jobs(cfg)
    shares = split(all_jobs, cfg, parts)
    tokens = sum(job_steps(j, cfg) * cfg.batch * cfg.ctx for j in all_jobs)
    flops = sum(job_steps(j, cfg) * cfg.batch * cfg.ctx * flops_per_token(j["width"], cfg.layers, cfg.ctx)
                for j in all_jobs)
    lines = [f"sweep lm ({cfg.name}): {len(all_jobs)} runs, {tokens / 1e9:.2f}G tokens, {flops:.3g} FLOPs; "
             f"estimated H100 time {(PART_OVERHEAD_S + sum(estimate_seconds(j, cfg) for j in all_jobs)) / 60:.1f} min"]
    for w in sorted({j["width"] for j in all_jobs}):
        lines.append(f"  width {w:5d}: {flops_per_token(w, cfg.layers, cfg.ctx) / 1e6:7.1f} MFLOP/token, "
                     f"{cfg.batch * cfg.ctx / step_seconds(w, cfg) / 1e6:.2f}M tokens/s estimated")
    for k, share in enumerate(shares):
        lines.append(f"  part {k + 1}/{parts}: {len(share):3d} runs, "
                     f"{(PART_OVERHEAD_S + sum(estimate_seconds(j, cfg) for j in share)) / 60:.1f} min estimated")
    return "\n".join(lines)


# --- one run --------------------------------------------------------------------------------


def _cosine(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


@torch.no_grad()
def evaluate(model: TinyGPT, val: torch.Tensor, cfg: LMConfig, device, autocast) -> float:
    starts = torch.linspace(0, val.numel() - cfg.ctx - 2, cfg.val_windows).long()
    idx = starts[:, None] + torch.arange(cfg.ctx + 1)[None]
    xy = val[idx].to(device=device, dtype=torch.long)
    total = 0.0
    model.eval()
    for k in range(0, xy.shape[0], 64):
        with autocast():
            total += float(model.loss(xy[k:k + 64])) * xy[k:k + 64].shape[0]
    model.train()
    return total / xy.shape[0]


def train_run(job: dict, cfg: LMConfig, corpus, device="cpu", backend=None, compile=False, tick=None) -> dict:
    """Train one run of the grid; returns the CSV fields it measures."""
    device = torch.device(device)
    backend = backend or ("auto" if device.type == "cuda" else "reference")
    n = job["dataset_tokens"]
    if n + 1 > corpus.train.numel():
        raise ValueError(f"dataset of {n} tokens asked for, but this corpus's training stream has "
                         f"{corpus.train.numel()} bytes")
    data = corpus.train[: n + 1].to(device)
    m_iters = steps_per_epoch(n, cfg)
    epochs = cfg.ds_epochs if job["experiment"] == "dataset" else cfg.w_epochs
    total = m_iters * epochs
    torch.manual_seed(1000 + job["seed"])
    model = TinyGPT(job["width"], cfg.layers, cfg.ctx, cfg.head_dim).to(device)
    if job["experiment"] == "width":
        with torch.device("meta"):
            base = TinyGPT(cfg.w_widths[0], cfg.layers, cfg.ctx, cfg.head_dim)
    else:
        base = model  # one width: every lr multiplier is 1; vector-like parameters are not decayed
    groups = mup_param_groups(model, base, lr=job["lr"])
    for g in groups:
        g.pop("param_names", None)
    lam = float("nan")
    if job["mode"] == "none":
        opt = AdamWTau(groups, lr=job["lr"], backend=backend)
    elif job["mode"] in ("tau", "tau_fixed"):
        opt = AdamWTau(groups, lr=job["lr"], tau_epochs=job["tau_epochs"], iters_per_epoch=m_iters, backend=backend)
        lam = 1.0 / (job["lr"] * m_iters * job["tau_epochs"])
    elif job["mode"] == "lambda_fixed":
        # the λ that gives τ_epoch at the reference lr on the base width, then held as the lr moves
        lam = 1.0 / (cfg.w_ref_lr * m_iters * job["tau_epochs"])
        opt = AdamWTau(groups, lr=job["lr"], weight_decay=lam, backend=backend)
    else:
        raise ValueError(f"unknown mode {job['mode']!r}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(total, max(1, int(cfg.warmup_frac * total))))
    step_model = torch.compile(model) if compile else model
    if device.type == "cuda":
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        import contextlib
        autocast = contextlib.nullcontext
    starts = torch.arange(n // cfg.ctx, device=device) * cfg.ctx
    offs = torch.arange(cfg.ctx + 1, device=device)
    gen = torch.Generator().manual_seed(2000 + job["seed"])
    last = torch.zeros((), device=device)
    t0 = time.perf_counter()
    diverged = False
    for ep in range(epochs):
        perm = torch.randperm(starts.numel(), generator=gen).to(device)
        for k in range(m_iters):
            xy = data[starts[perm[k * cfg.batch:(k + 1) * cfg.batch]][:, None] + offs].long()
            with autocast():
                loss = TinyGPT.loss(step_model, xy) if compile else model.loss(xy)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ep == epochs - 1:
                last = last + loss.detach()
            if tick is not None:
                tick(job)
        if not math.isfinite(float(loss.detach())):
            diverged = True
            break
    train_loss = float("nan") if diverged else float(last) / m_iters
    val = float("nan") if diverged else evaluate(model, corpus.val, cfg, device, autocast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return dict(weight_decay=lam, iters_per_epoch=m_iters, steps=total, epochs=epochs, train_loss=train_loss,
                val_loss=val if math.isfinite(val) else float("nan"), seconds=time.perf_counter() - t0,
                device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")


# --- CSV ------------------------------------------------------------------------------------


def _fmt(v) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _key(row: dict) -> tuple:
    return tuple(_fmt(row[k]) if k in ("lr", "tau_epochs") else str(row[k]) for k in KEY)


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("dataset_tokens", "width", "seed", "iters_per_epoch", "steps", "epochs", "corpus_bytes",
                  "corpus_files"):
            r[k] = int(r[k])
        for k in ("lr", "tau_epochs", "weight_decay", "train_loss", "val_loss", "seconds"):
            r[k] = float(r[k])
    return rows


def _append(path: str, row: dict) -> None:
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: _fmt(row[k]) if isinstance(row[k], float) else row[k] for k in COLUMNS})
        f.flush()
        os.fsync(f.fileno())


# --- analysis -------------------------------------------------------------------------------


def _mean_by(rows, keys, value="val_loss") -> dict:
    acc: dict = {}
    for r in rows:
        acc.setdefault(tuple(r[k] for k in keys), []).append(r[value])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def summarize(rows: list[dict], cfg: LMConfig) -> dict:
    ds = [r for r in rows if r["experiment"] == "dataset"]
    mean = _mean_by([r for r in ds if r["mode"] == "tau"], ("dataset_tokens", "tau_epochs"))
    none = _mean_by([r for r in ds if r["mode"] == "none"], ("dataset_tokens",))
    seeds = {n: len({r["seed"] for r in ds if r["dataset_tokens"] == n}) for n in cfg.ds_sizes}
    best = []
    for n in cfg.ds_sizes:
        curve = [(t, mean.get((n, t), float("nan"))) for t in cfg.ds_taus]
        finite = [(t, v) for t, v in curve if math.isfinite(v)]
        if not finite:
            continue
        t_best, v_best = min(finite, key=lambda tv: tv[1])
        m = steps_per_epoch(n, cfg)
        edge = t_best in (finite[0][0], finite[-1][0])
        best.append(dict(dataset_tokens=n, tau_epochs=t_best, weight_decay=1.0 / (cfg.ds_lr * m * t_best), edge=edge,
                         val_loss=v_best, no_decay_val_loss=none.get((n,), float("nan")), seeds=seeds[n],
                         curve=curve))
    slope = float("nan")
    if len(best) >= 2:
        slope = float(np.polyfit(np.log([b["dataset_tokens"] for b in best]),
                                 np.log([b["weight_decay"] for b in best]), 1)[0])
    wd = [r for r in rows if r["experiment"] == "width"]
    wmean = _mean_by(wd, ("mode", "width", "lr"))
    width = {}
    for mode in ("lambda_fixed", "tau_fixed"):
        per = {}
        for w in cfg.w_widths:
            curve = [(lr, wmean.get((mode, w, lr), float("nan"))) for lr in cfg.w_lrs]
            finite = [(lr, v) for lr, v in curve if math.isfinite(v)]
            if finite:
                lr_b, v_b = min(finite, key=lambda lv: lv[1])
                per[w] = dict(best_lr=lr_b, best_val_loss=v_b, curve=curve,
                              edge=lr_b in (finite[0][0], finite[-1][0]))
        base = cfg.w_widths[0]
        if base in per:
            for w, d in per.items():
                at_base = dict(d["curve"]).get(per[base]["best_lr"], float("nan"))
                d["regret"] = at_base - d["best_val_loss"]
                d["regret_pct"] = 100.0 * d["regret"] / d["best_val_loss"]
        width[mode] = per
    return {"best": best, "slope": slope, "width": width}


def print_summary(s: dict, corpus_info: dict, cfg: LMConfig) -> None:
    print(f"sweep lm ({cfg.name}) on the stdlib corpus: {corpus_info['corpus_bytes']} bytes in "
          f"{corpus_info['corpus_files']} files, sha256 {corpus_info['corpus_sha256']}, {corpus_info['python']}")
    print(f"dataset: width {cfg.ds_width}, lr {cfg.ds_lr:g}, {cfg.ds_epochs} epochs; best τ_epoch per dataset size "
          "(val loss in nats/byte, mean over seeds)")
    for b in s["best"]:
        print(f"  N = {b['dataset_tokens']:9d} tokens  best τ_epoch {b['tau_epochs']:6.3g}  best λ {b['weight_decay']:8.3g}"
              f"  val {b['val_loss']:.4f}  (no decay {b['no_decay_val_loss']:.4f}; {b['seeds']} seeds)"
              + ("  [at the grid's edge]" if b["edge"] else ""))
    print(f"  slope of log best λ vs log N: {s['slope']:+.2f} (the rule predicts -1)")
    print(f"width: μP widths {', '.join(map(str, cfg.w_widths))}; best base lr per width, and the regret of "
          f"width {cfg.w_widths[0]}'s best lr")
    for mode, per in s["width"].items():
        cells = "  ".join(f"w{w}: {d['best_lr']:.2g}{'*' if d['edge'] else ''} ({d.get('regret_pct', float('nan')):+.1f}%)"
                          for w, d in per.items())
        print(f"  {mode:13s} {cells}")
    print("  (* = at the lr grid's edge; in parentheses: val loss at the base width's best lr over the width's best)")


def plot(s: dict, cfg: LMConfig, path: str, corpus_info: dict) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    a = axes[0, 0]
    for b in s["best"]:
        t, v = zip(*b["curve"])
        line, = a.plot(t, v, "o-", label=f"N = {b['dataset_tokens']:,}")
        if math.isfinite(b["no_decay_val_loss"]):
            a.axhline(b["no_decay_val_loss"], ls=":", color=line.get_color())
    a.set_xscale("log")
    a.set_xlabel("τ_epoch")
    a.set_ylabel("val loss (nats/byte)")
    a.set_title(f"dataset size, {cfg.ds_epochs} epochs (dotted: no decay)", fontsize=9)
    a.legend(fontsize=7)
    a = axes[0, 1]
    if s["best"]:
        ns = np.array([b["dataset_tokens"] for b in s["best"]], dtype=float)
        lam = np.array([b["weight_decay"] for b in s["best"]])
        a.loglog(ns, lam, "o-", label=f"best λ (slope {s['slope']:+.2f})")
        a.loglog(ns, lam[0] * ns[0] / ns, "k--", label="∝ 1/N (the rule)")
        a.legend(fontsize=7)
    a.set_xlabel("dataset size N (tokens)")
    a.set_ylabel("best λ (torch form)")
    for a, mode in zip(axes[1], ("lambda_fixed", "tau_fixed")):
        for w, d in s["width"].get(mode, {}).items():
            lrs, v = zip(*d["curve"])
            a.plot(lrs, v, "o-", label=f"width {w}")
        a.set_xscale("log")
        a.set_xlabel("base lr (μP-scaled per group)")
        a.set_ylabel("val loss (nats/byte)")
        a.set_title({"lambda_fixed": "λ fixed (torch form)", "tau_fixed": f"τ_epoch = {cfg.w_tau_epochs:g} fixed"}[mode],
                    fontsize=9)
        a.legend(fontsize=7)
    from matplotlib.ticker import NullFormatter
    for a in axes.flat:  # log axes: label the decades only, the minor labels collide
        a.xaxis.set_minor_formatter(NullFormatter())
        a.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"sweep lm ({cfg.name}): stdlib corpus {corpus_info['corpus_bytes']:,} B, "
                 f"sha256 {corpus_info['corpus_sha256']}, {corpus_info['python']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- driver ---------------------------------------------------------------------------------


def _run_jobs(todo, cfg, corpus, device, backend, compile, tick, csv_path, base, bar, est, progress):
    for j in todo:
        r = train_run(j, cfg, corpus, device=device, backend=backend, compile=compile, tick=tick)
        row = {**base, **j, **r}
        _append(csv_path, row)
        bar.update(int(RUN_OVERHEAD_S))
        if progress:
            msg = (f"  {j['experiment']:7s} N={j['dataset_tokens']} w={j['width']} {j['mode']} lr={j['lr']:.3g} "
                   f"τ_ep={j['tau_epochs']:.3g} seed={j['seed']}: val {row['val_loss']:.4f}  "
                   f"({row['seconds']:.1f} s, {est[id(j)]} steps)")
            bar.write(msg) if hasattr(bar, "write") else print(msg)


def run(out: str, quick: bool = False, device: str = "cpu", part: str | None = None, backend: str | None = None,
        compile: bool = False, progress: bool = True, plan_only: bool = False) -> dict:
    cfg = QUICK if quick else FULL
    i, k = parse_part(part)
    if plan_only:
        text = plan_text(cfg, k)
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
    done = {_key(r) for r in done_rows}
    all_jobs = jobs(cfg)
    mine = split(all_jobs, cfg, k)[i - 1]
    base = {"config": cfg.name, **info}
    todo = [j for j in mine if _key({**base, **j}) not in done]
    est = {id(j): job_steps(j, cfg) for j in todo}
    total_est = sum(estimate_seconds(j, cfg) for j in todo)
    print(f"sweep lm ({cfg.name}) part {i}/{k}: {len(mine)} runs, {len(mine) - len(todo)} already in {csv_path}; "
          f"{len(todo)} to run, {total_est / 60:.1f} min estimated on an H100")
    bar = _bar(max(1, int(round(total_est))), f"sweep lm {i}/{k}", progress)
    per_step = {w: step_seconds(w, cfg) for w in {j["width"] for j in todo}}
    acc = [0.0]

    def tick(job):  # the bar counts estimated seconds, so its rate and ETA follow the estimate's scale
        acc[0] += per_step[job["width"]]
        if acc[0] >= 1.0:
            bar.update(int(acc[0]))
            acc[0] -= int(acc[0])

    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu" and quick:
        torch.set_num_threads(1)  # the quick model's matmuls are too small to gain from a second thread
    try:
        _run_jobs(todo, cfg, corpus, device, backend, compile, tick, csv_path, base, bar, est, progress)
    finally:
        torch.set_num_threads(threads)
    bar.close()
    rows = [r for r in read_rows(csv_path) if r["config"] == cfg.name and r["corpus_sha256"] == info["corpus_sha256"]]
    have = {_key(r) for r in rows}
    missing = [j for j in all_jobs if _key({**base, **j}) not in have]
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
    quick = bool(args.quick)
    device = args.device or "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("sweep lm: --device cuda asked for, but torch sees no CUDA device")
    try:
        r = run(args.out, quick=quick, device=device, part=args.part, backend=args.backend, compile=args.compile,
                progress=not args.no_progress, plan_only=args.plan)
    except ValueError as e:
        raise SystemExit(f"sweep lm: {e}")
    if "png" in r:
        print(f"wrote {r['png']}")
    if "csv" in r:
        print(f"wrote {r['csv']}")
    return 0
