"""`adamw-tau sweep lm`: the corpus's definition, the model's μP classes, the plan, and the --quick run."""
import csv
import math

import pytest
import torch

from adamw_tau import cli
from adamw_tau.experiments.lm import corpus as stdlib_corpus
from adamw_tau.experiments.lm import grid, sweep
from adamw_tau.scaling import mup
from adamw_tau.experiments.lm.tiny_gpt import TinyGPT, flops_per_token


def test_corpus_rule_and_split():
    files = stdlib_corpus.stdlib_files()
    assert files == sorted(files) and "os.py" in files and "json/decoder.py" in files
    for f in files:
        parts = f.split("/")
        assert not set(parts[:-1]) & stdlib_corpus.EXCLUDED_ANYWHERE, f
        assert parts[0] not in stdlib_corpus.EXCLUDED_TOP, f
        assert not parts[-1].startswith("_sysconfigdata"), f
    c = stdlib_corpus.load()
    assert c.train.numel() + c.val.numel() == c.total_bytes
    assert c.n_val_files == len(files) // stdlib_corpus.VAL_EVERY
    assert len(c.sha256) == 16 and int(c.sha256, 16) >= 0
    assert c.train.numel() > max(grid.FULL.ds_sizes) + 1  # the full grid's largest dataset fits
    assert c.train.dtype == torch.uint8


def test_tiny_gpt_mup_classes_and_flops():
    base, wide = TinyGPT(16, 2, 8, head_dim=8), TinyGPT(64, 2, 8, head_dim=8)
    cls = mup.classify(wide, base)
    assert cls["tok.weight"][0] == "input" and cls["pos.weight"][0] == "input"  # lr kept at every width
    assert cls["head.weight"] == ("output", 4.0)
    assert cls["blocks.0.qkv.weight"] == ("hidden", 4.0) and cls["blocks.1.fc_proj.weight"] == ("hidden", 4.0)
    assert cls["blocks.0.ln1.weight"][0] == "vector" and cls["blocks.0.fc.bias"][0] == "vector"
    assert float(wide.head.weight.detach().abs().sum()) == 0.0  # readout starts at zero
    # 6·(12·L·d² + 256·d) + 12·L·ctx·d
    assert flops_per_token(256, 4, 256) == 6 * (12 * 4 * 256 ** 2 + 256 * 256) + 12 * 4 * 256 * 256
    assert TinyGPT(16, 1, 8, head_dim=8).loss(torch.randint(0, 256, (2, 9))).item() == pytest.approx(math.log(256))


def test_full_plan_fits_the_parts():
    cfg = grid.FULL
    jobs = grid.jobs(cfg)
    assert max(cfg.ds_sizes) / min(cfg.ds_sizes) >= 16 and cfg.ds_seeds >= 2
    assert max(cfg.w_widths) / min(cfg.w_widths) >= 8
    shares = grid.split(jobs, cfg, 4)
    assert sorted(map(id, sum(shares, []))) == sorted(map(id, jobs))  # every run exactly once
    for share in shares:
        assert grid.PART_OVERHEAD_S + sum(grid.estimate_seconds(j, cfg) for j in share) < 8 * 60
    # the estimate is never faster than the H100 measurement it was fitted to (tokens/s)
    for width, measured in ((128, 1.5e6), (256, 1.5e6), (512, 1.1e6)):
        assert cfg.batch * cfg.ctx / grid.step_seconds(width, cfg) <= measured
    assert grid.parse_part("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x"):
        with pytest.raises(ValueError, match="--part"):
            grid.parse_part(bad)


@pytest.mark.slow  # full tier: 136 CPU s measured
def test_sweep_lm_quick(tmp_path, capsys):
    assert cli.main(["sweep", "lm", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "lm.csv") as f:
        rows = list(csv.DictReader(f))
    cfg = grid.QUICK
    assert len(rows) == len(grid.jobs(cfg))
    assert set(rows[0]) == set(grid.COLUMNS)
    c = stdlib_corpus.load()
    assert {r["corpus_sha256"] for r in rows} == {c.sha256} and {int(r["corpus_bytes"]) for r in rows} == {c.total_bytes}
    assert all(math.isfinite(float(r["val_loss"])) for r in rows)
    ds = [r for r in rows if r["experiment"] == "dataset"]
    assert {int(r["dataset_tokens"]) for r in ds} == set(cfg.ds_sizes)
    assert {int(r["seed"]) for r in ds} == set(range(cfg.ds_seeds))
    assert (tmp_path / "lm.png").stat().st_size > 10_000
    for n in cfg.ds_sizes:
        assert f"N = {n:9d} tokens  best τ_epoch" in out
    assert "slope of log best λ vs log N" in out and "lambda_fixed" in out and "tau_fixed" in out

    # a rerun finds every run in the CSV and trains nothing
    assert cli.main(["sweep", "lm", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    assert f"{len(rows)} already in" in capsys.readouterr().out
    with open(tmp_path / "lm.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_sweep_lm_refuses_to_mix_corpora(tmp_path):
    rows = [{k: "0" for k in grid.COLUMNS}]
    rows[0].update(config="quick", corpus_sha256="0123456789abcdef", experiment="dataset", mode="tau")
    with open(tmp_path / "lm.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=grid.COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(SystemExit, match="another corpus"):
        sweep.run(str(tmp_path), quick=True, progress=False)


def test_part_runs_only_its_share(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(sweep, "train_run", lambda job, *a, **k: trained.append(job) or dict(
        weight_decay=1.0, iters_per_epoch=1, steps=1, epochs=1, train_loss=1.0, val_loss=1.0, seconds=0.0,
        device="cpu"))
    r = sweep.run(str(tmp_path), quick=True, part="2/3", progress=False)
    share = grid.split(grid.jobs(grid.QUICK), grid.QUICK, 3)[1]
    assert list(map(repr, trained)) == list(map(repr, share)) and r["missing"] == len(grid.jobs(grid.QUICK)) - len(share)
    trained.clear()
    r = sweep.run(str(tmp_path), quick=True, progress=False)  # the rest; then the summary
    assert len(trained) == len(grid.jobs(grid.QUICK)) - len(share) and r["missing"] == 0
    assert (tmp_path / "lm.png").exists()


def test_too_small_a_corpus_stops_before_training(tmp_path, monkeypatch):
    import dataclasses
    big = dataclasses.replace(grid.QUICK, ds_sizes=(10 ** 9,))
    monkeypatch.setattr(sweep, "QUICK", big)
    monkeypatch.setattr(sweep, "train_run", lambda *a, **k: pytest.fail("trained despite the check"))
    with pytest.raises(ValueError, match="needs 1000000001 training bytes"):
        sweep.run(str(tmp_path), quick=True, progress=False)


def test_medium_plan_lists_the_grid_and_its_cpu_estimate(capsys):
    cfg = grid.MEDIUM
    assert max(cfg.ds_sizes) / min(cfg.ds_sizes) >= 16 and cfg.ds_seeds >= 2
    assert max(cfg.w_widths) / min(cfg.w_widths) >= 8
    assert grid.on_cpu(cfg) and not grid.on_cpu(grid.FULL) and not grid.on_cpu(grid.QUICK)
    # every width the grid trains has a CPU calibration, and the estimate is the calibration's
    rate = dict(cfg.cpu_tokens_per_s)
    jobs = grid.jobs(cfg)
    assert {j["width"] for j in jobs} <= set(rate)
    j = jobs[0]
    tokens = grid.job_steps(j, cfg) * cfg.batch * cfg.ctx
    assert grid.estimate_seconds(j, cfg) == pytest.approx(grid.CPU_RUN_OVERHEAD_S + tokens / rate[j["width"]])
    total = grid.CPU_PART_OVERHEAD_S + sum(grid.estimate_seconds(j, cfg) for j in jobs)
    shares = grid.split(jobs, cfg, cfg.cpu_workers)  # the workers take the runs longest first, as split does
    wall = grid.CPU_PART_OVERHEAD_S + max(sum(grid.estimate_seconds(j, cfg) for j in s) for s in shares)
    assert cfg.cpu_workers == 2 and wall < 0.6 * total  # two processes, balanced
    assert cli.main(["sweep", "lm", "--medium", "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sweep lm (medium): {len(jobs)} runs,")
    assert (f"estimated CPU (1 thread a process) time {total / 60:.1f} min; {wall / 60:.1f} min wall in 2 worker "
            "processes side by side") in out
    assert wall <= 45 * 60  # the budget for a 2-core CPU
    for w in cfg.w_widths:
        assert f"width {w:5d}:" in out and "tokens/s measured on this CPU" in out
    assert cli.main(["sweep", "lm", "--medium", "--plan", "--part", "2/2"]) == 0
    out = capsys.readouterr().out
    assert "part 1/2:" in out and "part 2/2:" in out
    with pytest.raises(SystemExit, match="two grids"):
        cli.main(["sweep", "lm", "--medium", "--quick", "--plan"])


@pytest.mark.slow  # full tier: 24 CPU s, spawns workers
def test_workers_give_the_same_runs_as_one_process():
    from adamw_tau.experiments.lm.train import train_run
    from adamw_tau.experiments.lm.workers import run_side_by_side
    cfg = grid.QUICK
    todo = [j for j in grid.jobs(cfg) if j["experiment"] == "dataset" and j["dataset_tokens"] == cfg.ds_sizes[0]][:3]
    got = {repr(j): r for j, r in run_side_by_side(todo, cfg, 2, 1, "cpu", None, False,
                                                    order_key=lambda j: grid.estimate_seconds(j, cfg))}
    assert len(got) == len(todo)
    c = stdlib_corpus.load()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for j in todo:
            r = train_run(j, cfg, c)
            assert got[repr(j)]["val_loss"] == r["val_loss"] and got[repr(j)]["train_loss"] == r["train_loss"]
    finally:
        torch.set_num_threads(threads)
