"""``adamw-tau sweep``: the command line of the seeds' experiments (ridge, dataset, width, lm)."""
from __future__ import annotations

import os

from .linear_sweeps import sweep_dataset, sweep_ridge
from .width_sweep import sweep_width

SWEEPS = {"ridge": sweep_ridge, "dataset": sweep_dataset, "width": sweep_width}


def add_parser(sub, func) -> None:
    s = sub.add_parser("sweep", help="reproduce the seeds' experiments (ridge, dataset, width, lm)")
    s.add_argument("which", choices=[*SWEEPS, "lm"])
    s.add_argument("--out", default=".", help="folder for the PNG and CSV (default: here)")
    s.add_argument("--quick", action="store_true", help="a small grid, for CI")
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
                   help="lm on cpu: runs side by side in this many processes (default: the grid's, 2 for --medium)")
    s.add_argument("--compile", action="store_true", help="lm: torch.compile the model")
    s.set_defaults(func=func)


def main(args) -> int:
    if args.which == "lm":
        from .lm import sweep
        return sweep.main(args)
    extra = {"init": args.init} if args.which == "ridge" and args.init is not None else {}
    SWEEPS[args.which](args.out, quick=args.quick, progress=not args.no_progress, **extra)
    for ext in ("png", "csv"):
        print(f"wrote {os.path.join(args.out, f'{args.which}.{ext}')}")
    return 0
