"""The LM sweep's grid: its configs (quick, medium, full), the runs they hold, what each costs (on
an H100, or on a CPU where the config carries a CPU calibration), and how the runs split into parts."""
from __future__ import annotations

from dataclasses import dataclass

from .. import common
from .tiny_gpt import flops_per_token


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
    # CPU: threads per process (0: leave torch's default), and measured tokens/s per width for
    # this shape at that thread count; empty: the plan is costed on an H100 instead
    cpu_threads: int = 0
    cpu_tokens_per_s: tuple = ()
    cpu_workers: int = 1  # runs side by side in this many processes (the calibration was measured so)


QUICK = LMConfig(name="quick", layers=2, ctx=32, batch=16, head_dim=8, warmup_frac=0.02, val_windows=256,
                 ds_width=32, ds_lr=1e-2, ds_sizes=(2048, 8192, 32768), ds_epochs=4,
                 ds_taus=(0.125, 0.5, 2.0, 8.0), ds_seeds=2,
                 w_widths=(8, 16, 32, 64), w_lrs=(8e-3, 3.2e-2, 1.28e-1), w_tokens=8192, w_epochs=3,
                 w_tau_epochs=1.0, w_ref_lr=3.2e-2, w_seeds=1, cpu_threads=1)

FULL = LMConfig(name="full", layers=4, ctx=256, batch=64, head_dim=32, warmup_frac=0.02, val_windows=512,
                ds_width=256, ds_lr=1e-3, ds_sizes=(250_000, 500_000, 1_000_000, 2_000_000, 4_000_000), ds_epochs=8,
                ds_taus=(0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), ds_seeds=2,
                w_widths=(64, 128, 256, 512), w_lrs=tuple(common.geom(3e-4, 3e-2, 6)), w_tokens=4_000_000, w_epochs=3,
                w_tau_epochs=1.0, w_ref_lr=3e-3, w_seeds=1)

# medium: a 2-core CPU in under 45 minutes. Its numbers were set by short pilot runs
# (README, "sweep lm --medium"): lr 1e-2 at width 64 (3e-2 was worse at 32k bytes); the best
# τ_epoch moved from ~4-16 at 16k bytes to ~1 at 256k, so the τ grid spans 0.25-16; the width lrs
# bracket every pilot's best (3e-2 at width 16, 3e-2-1e-1 at width 128, in both modes).
MEDIUM = LMConfig(name="medium", layers=2, ctx=64, batch=32, head_dim=16, warmup_frac=0.02, val_windows=512,
                  ds_width=64, ds_lr=1e-2, ds_sizes=(16384, 65536, 262144), ds_epochs=8,
                  ds_taus=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0), ds_seeds=3,
                  w_widths=(16, 32, 64, 128), w_lrs=tuple(common.geom(1e-2, 1e-1, 5)), w_tokens=131072, w_epochs=3,
                  w_tau_epochs=0.5, w_ref_lr=common.geom(1e-2, 1e-1, 5)[2], w_seeds=2, cpu_threads=1, cpu_workers=2,
                  # tokens/s of one process (1 thread) while a second ran beside it, measured in the pilots
                  # on the 2-core CPU machine (2026-12-01 01:33-01:47 UTC) with other users' jobs holding the
                  # 1-minute load at 3.9-5.4; on an idle machine it runs faster, so the estimate errs long
                  cpu_tokens_per_s=((16, 60e3), (32, 35e3), (64, 22e3), (128, 8e3)))

CONFIGS = {"quick": QUICK, "medium": MEDIUM, "full": FULL}

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
CPU_RUN_OVERHEAD_S = 1.0   # CPU: model build, evaluation of 512 windows
CPU_PART_OVERHEAD_S = 5.0  # CPU: imports, corpus load


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
    epochs = job.get("epochs") or (cfg.ds_epochs if job["experiment"] == "dataset" else cfg.w_epochs)
    return epochs * steps_per_epoch(job["dataset_tokens"], cfg)


def on_cpu(cfg: LMConfig) -> bool:
    """Whether the config is costed on a CPU (it carries a CPU calibration) rather than an H100."""
    return bool(cfg.cpu_tokens_per_s)


def step_seconds(width: int, cfg: LMConfig) -> float:
    if on_cpu(cfg):
        rate = dict(cfg.cpu_tokens_per_s)
        if width not in rate:
            raise ValueError(f"config {cfg.name} has no CPU calibration for width {width}")
        return cfg.batch * cfg.ctx / rate[width]
    return STEP_FLOOR_S + flops_per_token(width, cfg.layers, cfg.ctx) * cfg.batch * cfg.ctx / EFFECTIVE_FLOPS


def run_overhead_s(cfg: LMConfig) -> float:
    return CPU_RUN_OVERHEAD_S if on_cpu(cfg) else RUN_OVERHEAD_S


def part_overhead_s(cfg: LMConfig) -> float:
    return CPU_PART_OVERHEAD_S if on_cpu(cfg) else PART_OVERHEAD_S


def estimate_seconds(job: dict, cfg: LMConfig) -> float:
    """Estimated seconds for one run: on the CPU of the config's calibration, else on an H100 (see
    STEP_FLOOR_S, EFFECTIVE_FLOPS)."""
    return run_overhead_s(cfg) + job_steps(job, cfg) * step_seconds(job["width"], cfg)


def device_words(cfg: LMConfig) -> str:
    return f"CPU ({cfg.cpu_threads} thread{'s' if cfg.cpu_threads != 1 else ''} a process)" if on_cpu(cfg) else "H100"


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


def plan_text(cfg: LMConfig, parts: int, workers: int = 1) -> str:
    all_jobs = jobs(cfg)
    shares = split(all_jobs, cfg, parts)
    tokens = sum(job_steps(j, cfg) * cfg.batch * cfg.ctx for j in all_jobs)
    flops = sum(job_steps(j, cfg) * cfg.batch * cfg.ctx * flops_per_token(j["width"], cfg.layers, cfg.ctx)
                for j in all_jobs)
    over = part_overhead_s(cfg)
    cpu = on_cpu(cfg)
    amount = f"{tokens / 1e6:.1f}M" if cpu else f"{tokens / 1e9:.2f}G"

    def wall(share):  # the busiest worker's share, by the same longest-first split the workers follow
        return over + max((sum(estimate_seconds(j, cfg) for j in s) for s in split(share, cfg, workers)), default=0.0)

    lines = [f"sweep lm ({cfg.name}): {len(all_jobs)} runs, {amount} tokens, {flops:.3g} FLOPs; "
             f"estimated {device_words(cfg)} time {(over + sum(estimate_seconds(j, cfg) for j in all_jobs)) / 60:.1f} min"
             + (f"; {wall(all_jobs) / 60:.1f} min wall in {workers} worker processes side by side" if workers > 1 else "")]
    for w in sorted({j["width"] for j in all_jobs}):
        rate = cfg.batch * cfg.ctx / step_seconds(w, cfg)
        lines.append(f"  width {w:5d}: {flops_per_token(w, cfg.layers, cfg.ctx) / 1e6:7.1f} MFLOP/token, "
                     + (f"{rate / 1e3:.0f}k tokens/s measured on this CPU" if cpu else f"{rate / 1e6:.2f}M tokens/s estimated"))
    for k, share in enumerate(shares):
        lines.append(f"  part {k + 1}/{parts}: {len(share):3d} runs, "
                     f"{(over + sum(estimate_seconds(j, cfg) for j in share)) / 60:.1f} min estimated"
                     + (f"; {wall(share) / 60:.1f} min wall in {workers} worker processes" if workers > 1 else ""))
    return "\n".join(lines)

