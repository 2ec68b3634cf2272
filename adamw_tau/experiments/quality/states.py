"""``adamw-tau sweep states``: 8-bit optimizer states against fp32 on real text (the state
format's quality check). TinyGPT in fp32, trained one pass over a fixed token budget with the same init, data
order, lr and decay, once per row:

ours_fp32     AdamWTau, state_dtype=torch.float32
ours_8bit     AdamWTau, state_dtype="8bit" (an optimizer that keeps more fails this row, and says why)
ours_4bit     AdamWTau, state_dtype="4bit" (likewise)
torchao_8bit  torchao.optim.AdamW8bit (an optional extra: a missing package leaves the row out)
torchao_4bit  torchao.optim.AdamW4bit (likewise)
bnb_8bit      bitsandbytes.optim.AdamW8bit (likewise)
torch_fp32    torch.optim.AdamW, fp32 states: a control, ours_fp32's math rounded in another order. Its
              gap to ours_fp32 is what rounding alone moves the final loss by (a run amplifies a
              one-ulp difference), the resolution of the other rows' gaps.

The anchors take torch's λ; each gets the λ equal to our τ_iter at the peak lr (training.py). The
bars: ours 8-bit's final validation loss within 1% of ours fp32's, ours 4-bit's within 2%.
"""
from __future__ import annotations

import concurrent.futures as cf
import importlib
import multiprocessing as mp
import os
import time

import torch

from ...optim.optimizer import AdamWTau
from .. import common
from .report import format_value, plot_curves, write_rows
from .training import (
    STATES_QUICK,
    QualityConfig,
    Run,
    batches,
    build_model,
    cpu_threads,
    default_backend,
    error_text,
    lambda_groups,
    load_corpus,
    scheduler,
    should_eval,
    state_bytes,
    tau_groups,
    val_loss,
)

ROWS = ("ours_fp32", "ours_8bit", "ours_4bit", "torchao_8bit", "torchao_4bit", "bnb_8bit", "torch_fp32")
GAP_BAR = 0.01  # the bar: ours 8-bit within 1% of ours fp32
GAP_BARS = {"ours_8bit": GAP_BAR, "ours_4bit": 0.02}  # and ours 4-bit within 2%
OURS = {"ours_fp32": torch.float32, "ours_8bit": "8bit", "ours_4bit": "4bit"}  # the state_dtype of our rows
# bytes of state per element of the quantized tensors a row must stay under (fp32 states: 8)
STATE_BYTES_BELOW = {"8bit": 4.0, "4bit": 2.0}
QUANTIZED_FROM = 4096  # tensors this large get 8-bit states in every 8-bit row (bnb's min_8bit_size)
COLUMNS = ["sweep", "config", "row", "status", "note", "final_val_loss", "final_train_loss", "gap_vs_ours_fp32",
           "state_bytes_per_param", "steps_done", "steps", "tokens", "width", "layers", "ctx", "batch", "lr",
           "tau_iters", "weight_decay", "seed", "package", "seconds", "device", "backend",
           "corpus_bytes", "corpus_files", "corpus_sha256", "python"]
CURVE_COLUMNS = ["run", "step", "tokens", "train_loss", "val_loss"]


class LeftOut(Exception):
    """A row whose optional package is missing: left out of the results, with the reason."""


def _package(module: str, row: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise LeftOut(f"{module.split('.')[0]} is not installed ({error_text(e)}); the {row} row needs it "
                      f"(pip install torchao==0.18.0 bitsandbytes==0.50.2 adds both anchors)") from None


def make_optimizer(row: str, model, cfg: QualityConfig, backend: str):
    """The row's optimizer over ``model`` and the package (and version) it comes from."""
    adam = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if row in OURS:
        opt = AdamWTau(tau_groups(model, cfg), state_dtype=OURS[row], backend=backend, **adam)
        return opt, "adamw_tau (this tree)"
    if row in ("torchao_8bit", "torchao_4bit"):
        ao = _package("torchao.optim", row)
        version = importlib.import_module("torchao").__version__
        cls = ao.AdamW8bit if row == "torchao_8bit" else ao.AdamW4bit
        return cls(lambda_groups(model, cfg), **adam), f"torchao {version}"
    if row == "bnb_8bit":
        bnb = _package("bitsandbytes", row)
        opt = bnb.optim.AdamW8bit(lambda_groups(model, cfg), min_8bit_size=QUANTIZED_FROM, **adam)
        return opt, f"bitsandbytes {bnb.__version__}"
    if row == "torch_fp32":
        return torch.optim.AdamW(lambda_groups(model, cfg), **adam), f"torch {torch.__version__}"
    raise ValueError(f"unknown row {row!r}; the rows are {ROWS}")


def _check_really_8bit(row: str, opt, model) -> None:
    """A quantized row (8-bit, 4-bit) must hold quantized states: an option accepted and ignored
    would pass fp32 states off as quantized ones."""
    big = [p for p in model.parameters() if p.numel() >= QUANTIZED_FROM]
    per = state_bytes(opt, big) / max(1, sum(p.numel() for p in big))
    bits = row.rsplit("_", 1)[1]
    if bits in STATE_BYTES_BELOW and per >= STATE_BYTES_BELOW[bits]:
        raise RuntimeError(f"{row}: the optimizer took its {bits} option but keeps {per:.2f} bytes of state per "
                           f"element of the tensors of >= {QUANTIZED_FROM} elements (below "
                           f"{STATE_BYTES_BELOW[bits]} expected)")


def run_row(row: str, cfg: QualityConfig, device: str = "cpu", backend: str | None = None, tick=None) -> dict:
    """Train one row; its summary fields and its curve. Never raises for the row's own failure:
    the error is the row's note."""
    backend = backend or default_backend(device)
    run, package, status, t0 = Run(row), "", "ok", time.perf_counter()
    try:
        corpus = load_corpus(cfg)
        data = batches(corpus, cfg, device)
        run.model = build_model(cfg, torch.float32, device)
        run.opt, package = make_optimizer(row, run.model, cfg, backend)
        run.sched = scheduler(run.opt, cfg)
        with cpu_threads(cfg, device):
            for step in range(1, cfg.steps + 1):
                run.backward(data[step - 1])
                run.step()
                if step == 1:
                    _check_really_8bit(row, run.opt, run.model)
                if run.error:
                    status = "failed"
                    break
                if should_eval(step, cfg):
                    run.vals[step] = val_loss(run.model, corpus, cfg, device)
                if tick is not None:
                    tick()
    except LeftOut as e:
        status, run.error = "left out", str(e)
    except Exception as e:  # the row's failure is its result; the other rows go on
        status, run.error = "failed", error_text(e)
    bytes_per = state_bytes(run.opt, run.model.parameters()) / sum(p.numel() for p in run.model.parameters()) \
        if run.opt is not None else float("nan")
    return dict(row=row, status=status, note=run.error, final_val_loss=run.final_val(cfg),
                final_train_loss=run.final_train(cfg), state_bytes_per_param=bytes_per, steps_done=len(run.losses),
                package=package, seconds=time.perf_counter() - t0, backend=backend, curve=run.curve(cfg))


def _run_in_worker(row, cfg, device, backend):
    return run_row(row, cfg, device, backend)


def _side_by_side(rows, cfg, device, backend, workers):
    """Rows in spawned worker processes (fork after torch's thread pool started can hang)."""
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_run_in_worker, r, cfg, device, backend): r for r in rows}
        for f in cf.as_completed(futures):
            yield f.result()


def run(out: str, cfg: QualityConfig = STATES_QUICK, rows=ROWS, device: str = "cpu", backend: str | None = None,
        workers: int = 1, progress: bool = True) -> dict:
    """Every row, then the CSVs, the PNG and the printed summary. Returns the summary rows by name."""
    corpus = load_corpus(cfg)
    info = corpus.describe()
    os.makedirs(out, exist_ok=True)
    print(header_line(cfg, info))
    results = {}
    if workers > 1:
        bar = common.progress_bar(len(rows), "sweep states", progress)
        for r in _side_by_side(rows, cfg, device, backend, workers):
            results[r["row"]] = r
            bar.update(1)
    else:
        bar = common.progress_bar(len(rows) * cfg.steps, "sweep states", progress)
        for row in rows:
            results[row] = run_row(row, cfg, device, backend, tick=lambda: bar.update(1))
    bar.close()
    ordered = [results[r] for r in rows]
    base = ordered[0]["final_val_loss"] if ordered and ordered[0]["row"] == "ours_fp32" else float("nan")
    summary = []
    for r in ordered:
        gap = r["final_val_loss"] / base - 1.0 if r["row"] != "ours_fp32" else 0.0
        summary.append({**{k: v for k, v in r.items() if k != "curve"}, "sweep": "states", "config": cfg.name,
                        "gap_vs_ours_fp32": gap, "steps": cfg.steps, "tokens": cfg.tokens, "width": cfg.width,
                        "layers": cfg.layers, "ctx": cfg.ctx, "batch": cfg.batch, "lr": cfg.lr,
                        "tau_iters": cfg.tau_iters, "weight_decay": cfg.weight_decay, "seed": cfg.seed,
                        "device": device, **info})
    stem = os.path.join(out, f"states_{cfg.name}")
    write_rows(f"{stem}.csv", COLUMNS, summary)
    write_rows(f"{stem}_curves.csv", CURVE_COLUMNS, [p for r in ordered for p in r["curve"]])
    text = summary_text(summary)
    print(text)
    plot_curves({r["row"]: r["curve"] for r in ordered if r["curve"]}, f"{stem}.png",
                f"sweep states ({cfg.name}): TinyGPT w{cfg.width} L{cfg.layers}, {cfg.tokens / 1e6:.2f}M tokens, "
                f"corpus {info['corpus_sha256']}", notes=[f"{r['row']}: {r['status']}: {r['note']}"
                                                         for r in summary if r["status"] != "ok"])
    return {"rows": {r["row"]: r for r in summary}, "csv": f"{stem}.csv", "curves": f"{stem}_curves.csv",
            "png": f"{stem}.png", "summary": text}


def header_line(cfg: QualityConfig, info: dict) -> str:
    return (f"sweep states ({cfg.name}): TinyGPT width {cfg.width}, {cfg.layers} layers, ctx {cfg.ctx}, fp32 params; "
            f"{cfg.steps} steps x {cfg.batch * cfg.ctx} tokens = {cfg.tokens / 1e6:.2f}M tokens, one pass; lr "
            f"{cfg.lr:g} (cosine, {cfg.warmup_frac:.0%} warmup), τ_iter {cfg.tau_iters:g} (λ {cfg.weight_decay:.4g} "
            f"for the anchors); corpus {info['corpus_bytes']} bytes, sha256 {info['corpus_sha256']} ({info['python']})")


def summary_text(summary: list[dict]) -> str:
    lines = [f"{'row':14s} {'status':9s} {'final val':>10s} {'vs ours fp32':>13s} {'state B/param':>14s} "
             f"{'seconds':>8s}  package"]
    for r in summary:
        if r["status"] == "ok":
            gap = "" if r["row"] == "ours_fp32" else format_value(100 * r["gap_vs_ours_fp32"], "+.2f") + "%"
            lines.append(f"{r['row']:14s} {r['status']:9s} {r['final_val_loss']:10.4f} {gap:>13s} "
                         f"{r['state_bytes_per_param']:14.2f} {r['seconds']:8.1f}  {r['package']}")
        else:
            lines.append(f"{r['row']:14s} {r['status']:9s} {r['note']}")
    by = {r["row"]: r for r in summary}
    ours32 = by.get("ours_fp32")
    for name, bar in GAP_BARS.items():
        ours, label = by.get(name), f"ours {name.rsplit('_', 1)[1][0]}-bit"
        if name != "ours_8bit" and ours is None:
            continue  # a row not asked for
        if ours and ours32 and ours["status"] == ours32["status"] == "ok":
            gap = ours["gap_vs_ours_fp32"]
            verdict = "yes" if gap <= bar else "NO"
            lines.append(f"{label} vs ours fp32: {100 * gap:+.2f}% final val loss; within {bar:.0%} "
                         f"(the bar): {verdict}")
        else:
            why = next((f"{r['row']} {r['status']}: {r['note']}" for r in (ours32, ours) if r and r["status"] != "ok"),
                       "a row was not run")
            lines.append(f"{label} vs ours fp32: not measured ({why})")
    control = by.get("torch_fp32")
    if control and ours32 and control["status"] == ours32["status"] == "ok":
        lines.append(f"rounding alone (torch_fp32, the same math as ours_fp32 in another order): "
                     f"{100 * control['gap_vs_ours_fp32']:+.2f}%, the resolution of the gaps above")
    return "\n".join(lines)
