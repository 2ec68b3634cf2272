"""``adamw-tau sweep masters``: the remainder format's training check. TinyGPT with bf16 params, three runs in
lockstep on the same batches, from the same init bits, with fp32 moments in all three so that
the master is the only difference:

master_fp32       master_weights=True: an fp32 master, the param its round-to-nearest-even image
master_remainder  master_weights="remainder": the master kept as the bf16 param plus an int16
                  remainder; an optimizer that keeps no remainder fails this row, and says why
bf16_no_master    master_weights=False: the bf16 param is all there is

Two bitwise checks of the remainder run's master, rebuilt after every step with
``adamw_tau.formats.bf16_remainder.merge(param, remainder)``:

lockstep  against master_fp32's master, at each step while the two runs' gradients agree bit for
          bit. Their bf16 params differ where the master's low half is exactly 0x8000 (the
          remainder format rounds those ties away from zero, round-to-nearest-even does not), so
          their gradients part once such a tie is hit; the step where they first differ is reported.
shadow    against an fp32-master optimizer fed the remainder run's own gradients, at every step:
          the same gradients for the whole run. Its params (round-to-nearest-even of the same
          master) against the remainder run's count the words rounded the other way at a tie.
"""
from __future__ import annotations

import math
import os
import time

import torch

from ...formats import bf16_remainder
from ...optim.optimizer import AdamWTau
from ...testing.bits import differing_lists
from .. import common
from .report import format_value, plot_curves, write_rows
from .training import (
    MASTERS_QUICK,
    QualityConfig,
    Run,
    batches,
    build_model,
    cpu_threads,
    default_backend,
    error_text,
    load_corpus,
    scheduler,
    should_eval,
    tau_groups,
    val_loss,
)

RUNS = {"master_fp32": True, "master_remainder": "remainder", "bf16_no_master": False}
COLUMNS = ["sweep", "config", "run", "status", "note", "final_val_loss", "final_train_loss", "steps_done", "steps",
           "beats_no_master", "grads_first_differ_step", "lockstep_steps_compared", "lockstep_master_words_differing",
           "shadow_steps_compared", "shadow_master_words_differing", "param_words_not_rne", "master_words",
           "tokens", "width", "layers", "ctx", "batch", "lr", "tau_iters", "seed", "seconds", "device", "backend",
           "corpus_bytes", "corpus_files", "corpus_sha256", "python"]
STEP_COLUMNS = ["step", "tokens", *(f"loss_{r}" for r in RUNS), "grad_words_differing",
                "lockstep_master_words_differing", "shadow_master_words_differing", "param_words_not_rne"]


def make_optimizer(run: str, params, cfg: QualityConfig, backend: str):
    return AdamWTau(tau_groups(params, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, master_weights=RUNS[run],
                    state_dtype=torch.float32, backend=backend)


def remainders(opt, params) -> list[torch.Tensor]:
    """Each param's int16 remainder, or a RuntimeError saying the optimizer keeps none."""
    out = []
    for i, p in enumerate(params):
        r = opt.state.get(p, {}).get(bf16_remainder.STATE_KEY)
        if not isinstance(r, torch.Tensor) or r.dtype != torch.int16:
            raise RuntimeError(f"master_weights='remainder' keeps no int16 {bf16_remainder.STATE_KEY!r} state for "
                               f"param {i} after a step (its state keys: {sorted(opt.state.get(p, {}))})")
        out.append(r)
    return out


def rebuilt_masters(params, rems) -> list[torch.Tensor]:
    return [bf16_remainder.merge(p.detach(), r) for p, r in zip(params, rems, strict=True)]


def masters_of(opt, params) -> list[torch.Tensor]:
    return [opt.state[p]["master_param"] for p in params]


def _grads(run: Run) -> list[torch.Tensor]:
    return [p.grad for p in run.model.parameters()]


def _guarded(run: Run, fn, *args) -> None:
    """``fn(*args)``; an exception ends this run (its row says why), not the others."""
    try:
        fn(*args)
    except Exception as e:
        run.error = error_text(e)


def train(cfg: QualityConfig, device: str = "cpu", backend: str | None = None, progress: bool = True) -> dict:
    """The three runs and the shadow, step by step; the runs, the per-step records and the
    comparison totals."""
    backend = backend or default_backend(device)
    corpus = load_corpus(cfg)
    data = batches(corpus, cfg, device)
    runs = {name: Run(name) for name in RUNS}
    for name, run in runs.items():
        try:
            run.model = build_model(cfg, torch.bfloat16, device)
            run.opt = make_optimizer(name, list(run.model.parameters()), cfg, backend)
            run.sched = scheduler(run.opt, cfg)
        except Exception as e:  # this run fails; the others go on
            run.error = error_text(e)
    rem, ref = runs["master_remainder"], runs["master_fp32"]
    shadow = shadow_sched = None
    if rem.alive:
        shadow_params = [p.detach().clone() for p in rem.model.parameters()]
        shadow = make_optimizer("master_fp32", shadow_params, cfg, backend)
        shadow_sched = scheduler(shadow, cfg)
    steps, agree, first_differ = [], True, None
    bar = common.progress_bar(cfg.steps, "sweep masters", progress)
    t0 = time.perf_counter()
    with cpu_threads(cfg, device):
        for step in range(1, cfg.steps + 1):
            xy = data[step - 1]
            live = [r for r in runs.values() if r.alive]
            for r in live:
                _guarded(r, r.backward, xy)
            live = [r for r in live if r.alive]
            rec = {"step": step, "tokens": step * cfg.batch * cfg.ctx,
                   **{f"loss_{r.name}": r.losses[-1] for r in live}}
            if rem.alive and ref.alive and agree:
                rec["grad_words_differing"] = differing_lists(_grads(ref), _grads(rem))
                if rec["grad_words_differing"]:
                    agree, first_differ = False, step
            if rem.alive:
                for s, p in zip(shadow_params, rem.model.parameters()):
                    s.grad = p.grad.detach().clone()
            for r in live:
                _guarded(r, r.step)
            if rem.alive:
                try:
                    shadow.step()
                    shadow_sched.step()
                    rems = remainders(rem.opt, list(rem.model.parameters()))
                    rebuilt = rebuilt_masters(list(rem.model.parameters()), rems)
                except Exception as e:
                    rem.error = error_text(e)
                else:
                    if agree and ref.alive:
                        rec["lockstep_master_words_differing"] = differing_lists(
                            rebuilt, masters_of(ref.opt, list(ref.model.parameters())))
                    rec["shadow_master_words_differing"] = differing_lists(rebuilt, masters_of(shadow, shadow_params))
                    rec["param_words_not_rne"] = differing_lists(list(rem.model.parameters()), shadow_params)
            if should_eval(step, cfg):
                for r in runs.values():
                    if r.alive:
                        _guarded(r, lambda r=r: r.vals.__setitem__(step, val_loss(r.model, corpus, cfg, device)))
            steps.append(rec)
            bar.update(1)
    bar.close()
    return dict(runs=runs, steps=steps, first_differ=first_differ, seconds=time.perf_counter() - t0,
                backend=backend, master_words=sum(p.numel() for p in ref.model.parameters()) if ref.model else 0)


def _total(steps, key) -> tuple[int, int]:
    """(steps with the comparison, words differing summed over them)."""
    vals = [s[key] for s in steps if key in s]
    return len(vals), sum(vals)


def run(out: str, cfg: QualityConfig = MASTERS_QUICK, device: str = "cpu", backend: str | None = None,
        progress: bool = True) -> dict:
    """Train, then the CSVs, the PNG and the printed summary."""
    info = load_corpus(cfg).describe()
    os.makedirs(out, exist_ok=True)
    print(f"sweep masters ({cfg.name}): TinyGPT width {cfg.width}, {cfg.layers} layers, ctx {cfg.ctx}, bf16 params, "
          f"fp32 moments; {cfg.steps} steps x {cfg.batch * cfg.ctx} tokens, one pass; lr {cfg.lr:g} (cosine), "
          f"τ_iter {cfg.tau_iters:g}; corpus sha256 {info['corpus_sha256']} ({info['python']})")
    t = train(cfg, device, backend, progress)
    runs, steps = t["runs"], t["steps"]
    base = runs["bf16_no_master"].final_val(cfg)
    rows = []
    for name, r in runs.items():
        row = dict(sweep="masters", config=cfg.name, run=name, status="ok" if not r.error else "failed", note=r.error,
                   final_val_loss=r.final_val(cfg), final_train_loss=r.final_train(cfg), steps_done=len(r.losses),
                   steps=cfg.steps, tokens=cfg.tokens, width=cfg.width, layers=cfg.layers, ctx=cfg.ctx,
                   batch=cfg.batch, lr=cfg.lr, tau_iters=cfg.tau_iters, seed=cfg.seed, seconds=t["seconds"],
                   device=device, backend=t["backend"], **info)
        if name != "bf16_no_master" and not r.error and not math.isnan(base):
            row["beats_no_master"] = row["final_val_loss"] < base
        if name == "master_remainder":
            row["grads_first_differ_step"] = t["first_differ"]
            row["lockstep_steps_compared"], row["lockstep_master_words_differing"] = _total(
                steps, "lockstep_master_words_differing")
            row["shadow_steps_compared"], row["shadow_master_words_differing"] = _total(
                steps, "shadow_master_words_differing")
            row["param_words_not_rne"] = _total(steps, "param_words_not_rne")[1]
            row["master_words"] = t["master_words"]
        rows.append(row)
    stem = os.path.join(out, f"masters_{cfg.name}")
    write_rows(f"{stem}.csv", COLUMNS, rows)
    write_rows(f"{stem}_steps.csv", STEP_COLUMNS, steps)
    text = summary_text(rows, cfg)
    print(text)
    plot_curves({n: r.curve(cfg) for n, r in runs.items() if r.losses}, f"{stem}.png",
                f"sweep masters ({cfg.name}): TinyGPT w{cfg.width} L{cfg.layers}, bf16 params, corpus "
                f"{info['corpus_sha256']}", notes=text.splitlines()[len(rows) + 1:])
    return {"rows": {r["run"]: r for r in rows}, "steps": steps, "csv": f"{stem}.csv", "steps_csv": f"{stem}_steps.csv",
            "png": f"{stem}.png", "summary": text}


def summary_text(rows: list[dict], cfg: QualityConfig) -> str:
    lines = [f"{'run':17s} {'status':7s} {'final val':>10s} {'final train':>12s}"]
    for r in rows:
        lines.append(f"{r['run']:17s} {r['status']:7s} {format_value(r['final_val_loss'], '.4f'):>10s} "
                     f"{format_value(r['final_train_loss'], '.4f'):>12s}" + (f"  {r['note']}" if r["note"] else ""))
    by = {r["run"]: r for r in rows}
    rem = by["master_remainder"]
    if rem.get("shadow_steps_compared"):
        n, d = rem["lockstep_steps_compared"], rem["lockstep_master_words_differing"]
        first = rem["grads_first_differ_step"]
        lines.append(f"lockstep (master_fp32's gradients equal bit for bit): {n} steps compared, {d} master words "
                     f"differing of {rem['master_words']} a step; gradients first differed at "
                     + (f"step {first}" if first else f"no step of {cfg.steps}"))
        lines.append(f"shadow (an fp32 master fed this run's gradients): {rem['shadow_steps_compared']} steps, "
                     f"{rem['shadow_master_words_differing']} master words differing in all; params rounded the "
                     f"other way at a tie: {rem['param_words_not_rne']} words over the run")
    else:
        lines.append(f"remainder master checks: not run ({rem['note'] or 'no step compared'})")
    lines.append(claim_text(by))
    return "\n".join(lines)


def claim_text(by: dict) -> str:
    """The remainder format's claim, as measured: both master runs beat bf16 without master on final val loss."""
    claim = "claim 'both master runs beat bf16 without master on final val loss': "
    base = by["bf16_no_master"]
    if base["status"] != "ok":
        return claim + f"not checked (bf16_no_master failed: {base['note']})"
    parts = [f"bf16_no_master {base['final_val_loss']:.4f}"]
    beats = []
    for name in ("master_fp32", "master_remainder"):
        r = by[name]
        if r["status"] != "ok":
            parts.append(f"{name} failed")
            continue
        beats.append(r["beats_no_master"])
        parts.append(f"{name} {r['final_val_loss']:.4f} ({'beats' if r['beats_no_master'] else 'does not beat'} it)")
    verdict = ("holds" if all(beats) else "does not hold") if len(beats) == 2 else \
        ("not checked: a master run failed" if all(beats) else "does not hold")
    return claim + verdict + "; " + ", ".join(parts)
