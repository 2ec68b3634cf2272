"""Timing on a CPU or a GPU: medians of single calls and of back-to-back calls, the copy
roofline, and the one-line reason a failed row shows."""
from __future__ import annotations

import statistics
import time

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device: str, reps: int, warmup: int, budget_s: float | None = None, best: bool = False) -> float:
    """Median milliseconds of fn(): CUDA events on GPU, perf_counter on CPU. With
    ``budget_s``, stop after that many seconds once 3 calls are timed; ``best``: the fastest
    call instead (a ceiling is what the machine did at its best)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        if budget_s is not None and len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return min(times) if best else statistics.median(times)


def time_stream_ms(fn, device: str, steps: int = 10, reps: int = 5) -> float:
    """Median milliseconds per call of ``steps`` calls issued back to back, as a training loop
    issues them: on a GPU the host's work for one step overlaps the kernels of the one
    before, so this is the device's time per step once the host keeps ahead. ``time_ms``
    times single calls from an idle device, host work included."""
    fn()
    sync(device)
    per_step = []
    for _ in range(reps):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(steps):
                fn()
            b.record()
            b.synchronize()
            per_step.append(a.elapsed_time(b) / steps)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            per_step.append((time.perf_counter() - t0) * 1e3 / steps)
    return statistics.median(per_step)


def copy_ms(nbytes: int, device: str, reps: int, warmup: int) -> float:
    """The roofline for moving nbytes: on a GPU a device-to-device copy (reads nbytes/2,
    writes nbytes/2); on the CPU an in-place stream (x *= c over nbytes/2, read and written
    back). A CPU copy_ reads one buffer and writes another, which the CPU's caches and
    write-allocate make slower than an in-place update: the update measured at 150% of "copy"
    on the 2-core machine (RESULTS.md). The in-place stream is half reads, and the steps, more
    reads than writes, beat it too (101-110% on GPT-2): the bench's CPU roofline is
    ceiling.ceiling_ms, the step's own mix of streams."""
    n = max(1, nbytes // 2 // 4)
    src = torch.rand(n, device=device)
    if device != "cuda":
        return time_ms(lambda: src.mul_(1.0), device, reps, warmup)
    dst = torch.empty_like(src)
    return time_ms(lambda: dst.copy_(src), device, reps, warmup)


def roofline_name(device: str) -> str:
    return "% copy" if device == "cuda" else "% ceiling"


def why(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]


def cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
