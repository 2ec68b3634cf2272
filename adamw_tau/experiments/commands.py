"""``adamw-tau sweep``: the command line of the seeds' experiments (ridge, dataset, width, lm) and of
the state formats' quality checks on real text (states, masters)."""
from __future__ import annotations

import os

import torch

from .linear_sweeps import sweep_dataset, sweep_ridge
from .width_sweep import sweep_width

SWEEPS = {"ridge": sweep_ridge, "dataset": sweep_dataset, "width": sweep_width}
QUALITY = ("states", "masters")


def add_parser(sub, func) -> None:
    s = sub.add_parser("sweep", help="reproduce the seeds' experiments (ridge, dataset, width, lm); check the "
                                     "state formats on real text (states: 8-bit moments, masters: bf16 remainders)")
    s.add_argument("which", choices=[*SWEEPS, "lm", "lm-fair", *QUALITY])
    s.add_argument("--out", default=None,
                   help="folder for the PNG and CSV (default: here; docs/sweeps for states and masters)")
    s.add_argument("--quick", action="store_true",
                   help="a small grid, for CI (states, masters: the few-minute CPU run; without it, the full one)")
    s.add_argument("--medium", action="store_true",
                   help="lm: the grid sized for a 2-core CPU, about 45 minutes (see --plan)")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--init", type=float, default=None,
                   help="ridge: the scale of the random start w0 (default 1.0; 0 starts at zero)")
    s.add_argument("--device", default=None, help="lm: cpu (default) or cuda")
    s.add_argument("--part", default=None, metavar="I/K", help="lm: run the I-th of K shares of the grid")
    s.add_argument("--plan", action="store_true", help="lm: print the runs, FLOPs and estimated time per part, and stop")
    s.add_argument("--backend", default=None, help="lm: AdamWTau backend (default: auto on cuda, reference on cpu)")
    s.add_argument("--workers", type=int, default=None,
                   help="lm, states on cpu: runs side by side in this many processes (default: the grid's, 2 for "
                        "lm --medium; 2 for states)")
    s.add_argument("--compile", action="store_true", help="lm: torch.compile the model")
    s.add_argument("--design", choices=("dataset", "width"), default=None,
                   help="lm-fair: dataset size at a fixed number of steps, or μP width (default: dataset)")
    s.add_argument("--grid", choices=("cpu", "gpu"), default=None,
                   help="lm-fair: the grid sized for a 2-core CPU (default) or for one H100/H200")
    s.add_argument("--pilot", action="store_true",
                   help="lm-fair: the dataset design's middle size, one seed: the pilot that sets the τ window")
    s.add_argument("--summary", action="store_true",
                   help="lm-fair: run nothing; summarize the runs already in --out (a partial grid too)")
    s.add_argument("--lr", type=float, default=None, help="states, masters: the peak lr (default: the config's, 1e-2)")
    s.add_argument("--seed", type=int, default=None, help="states, masters: the init and data-order seed (default 0)")
    s.add_argument("--rows", default=None, metavar="ROW,ROW",
                   help="states: only these rows, comma-separated (ours_fp32, ours_8bit, ours_4bit, torchao_8bit, "
                        "torchao_4bit, bnb_8bit, torch_fp32; default: all). The gaps are to ours_fp32, so without it "
                        "first they are left empty")
    s.set_defaults(func=func)


def main(args) -> int:
    if args.which in QUALITY:
        return _quality(args)
    if args.out is None:
        args.out = "."
    fair_only = [f"--{k}" for k in ("design", "grid", "pilot", "summary") if getattr(args, k, None)]
    if fair_only and args.which != "lm-fair":
        raise SystemExit(f"sweep {args.which}: {', '.join(fair_only)} {'is' if len(fair_only) < 2 else 'are'} "
                         "an option of sweep lm-fair only (see --help)")
    if args.which == "lm":
        from .lm import sweep
        return sweep.main(args)
    if args.which == "lm-fair":
        return _lm_fair(args)
    extra = {"init": args.init} if args.which == "ridge" and args.init is not None else {}
    SWEEPS[args.which](args.out, quick=args.quick, progress=not args.no_progress, **extra)
    for ext in ("png", "csv"):
        print(f"wrote {os.path.join(args.out, f'{args.which}.{ext}')}")
    return 0


def _quality(args) -> int:
    from .quality import masters, states, training
    lm_only = [f"--{k}" for k in ("medium", "part", "plan", "compile") if getattr(args, k, None)]
    states_only = [f"--{k}" for k in ("workers", "rows") if getattr(args, k, None) is not None]
    wrong = lm_only or (states_only if args.which == "masters" else [])
    if wrong:
        raise SystemExit(f"sweep {args.which}: {', '.join(wrong)} {'is' if len(wrong) < 2 else 'are'} not an option "
                         "of this sweep (see --help)")
    device = args.device or "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"sweep {args.which}: --device cuda asked for, but torch sees no CUDA device")
    out = args.out if args.out is not None else os.path.join("docs", "sweeps")
    given = {k: v for k, v in (("lr", args.lr), ("seed", args.seed)) if v is not None}
    try:
        if args.which == "states":
            cfg = training.vary(training.STATES_QUICK if args.quick else training.STATES_FULL, **given)
            workers = args.workers if args.workers is not None else (2 if device == "cpu" else 1)
            rows = states.ROWS if args.rows is None else tuple(r.strip() for r in args.rows.split(","))
            unknown = [r for r in rows if r not in states.ROWS]
            if unknown or not rows:
                raise SystemExit(f"sweep states: --rows {args.rows!r}: unknown rows {unknown}; the rows are "
                                 f"{', '.join(states.ROWS)}")
            r = states.run(out, cfg, rows=rows, device=device, backend=args.backend, workers=max(1, workers),
                           progress=not args.no_progress)
        else:
            cfg = training.vary(training.MASTERS_QUICK if args.quick else training.MASTERS_FULL, **given)
            r = masters.run(out, cfg, device=device, backend=args.backend, progress=not args.no_progress)
    except ValueError as e:
        raise SystemExit(f"sweep {args.which}: {e}")
    for key in ("csv", "curves", "steps_csv", "png"):
        if key in r:
            print(f"wrote {r[key]}")
    return 0


def _lm_fair(args) -> int:
    from .lm import fair, fair_sweep
    wrong = [f"--{k}" for k in ("quick", "medium", "part", "compile", "init", "lr", "seed") if getattr(args, k, None)]
    if wrong:
        raise SystemExit(f"sweep lm-fair: {', '.join(wrong)} {'is' if len(wrong) < 2 else 'are'} not an option of "
                         "this sweep (see --help)")
    cfg = fair.CONFIGS[args.grid or "cpu"]
    design = args.design or "dataset"
    if args.plan:
        print(fair.plan_text(cfg, design))
        return 0
    device = args.device or "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("sweep lm-fair: --device cuda asked for, but torch sees no CUDA device")
    try:
        r = fair_sweep.run(args.out, cfg, design, device=device, backend=args.backend, progress=not args.no_progress,
                     workers=args.workers, pilot=args.pilot,
                                  summary_only=args.summary)
    except ValueError as e:
        raise SystemExit(f"sweep lm-fair: {e}")
    for key in ("csv", "png"):
        if r.get(key):
            print(f"wrote {r[key]}")
    return 0
