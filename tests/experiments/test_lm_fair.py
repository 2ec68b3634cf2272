"""`adamw-tau sweep lm-fair`: the analysis (interpolation in log τ, the seed bootstrap, the n-gram
baseline), the fixed-steps grid, and the width modes that coincide at the base width."""
import math
from pathlib import Path

import numpy as np

import pytest
import torch

from adamw_tau.experiments.lm import fair, fair_results, ngram
from adamw_tau.experiments.lm.corpus import Corpus, eval_windows
from adamw_tau.experiments.lm.fair_results import bootstrap_slope, interp_optimum
from adamw_tau.experiments.lm.train import train_run

ROOT2 = math.sqrt(2.0)


# --- interpolation ----------------------------------------------------------------------------


def test_interpolation_finds_a_parabolas_vertex_between_grid_points():
    grid = [0.5 * ROOT2 ** k for k in range(7)]
    for true in (0.83, 1.0, 1.7, 2.3):
        ys = [0.2 * (math.log(t) - math.log(true)) ** 2 + 1.5 for t in grid]
        o = interp_optimum(grid, ys)
        assert o["edge"] is None
        assert o["x"] == pytest.approx(true, rel=1e-9) and o["y"] == pytest.approx(1.5, abs=1e-12)
    # the grid's best point alone would be off by up to a factor 2^(1/4)
    assert grid[int(np.argmin([abs(math.log(t / 1.7)) for t in grid]))] != pytest.approx(1.7, rel=1e-3)


def test_interpolation_marks_an_unbracketed_optimum_and_skips_diverged_runs():
    grid = [0.5, 0.707, 1.0, 1.41]
    assert interp_optimum(grid, [1.0, 1.1, 1.2, 1.3]) == {"x": 0.5, "y": 1.0, "edge": "low"}
    assert interp_optimum(grid, [1.3, 1.2, 1.1, 1.0])["edge"] == "high"
    o = interp_optimum(grid, [1.3, float("nan"), 1.1, 1.2])  # nan: a diverged run, left out
    assert o["edge"] is None and 0.707 < o["x"] < 1.41
    with pytest.raises(ValueError, match="increasing"):
        interp_optimum([1.0, 0.5, 2.0], [1, 0, 1])
    with pytest.raises(ValueError, match="finite"):
        interp_optimum([1.0, 2.0], [float("nan")] * 2)


# --- the slope and its seed bootstrap -----------------------------------------------------------


def _curves(best_tau_of, sizes, seeds, noise=0.0, rng=None):
    taus = {n: tuple(0.25 * ROOT2 ** k for k in range(9)) for n in sizes}
    per_seed = {}
    for n in sizes:
        t0 = best_tau_of(n)
        base = np.array([0.3 * (math.log(t) - math.log(t0)) ** 2 + 2.0 for t in taus[n]])
        per_seed[n] = np.stack([base + (noise * rng.standard_normal(base.size) if noise else 0.0) for _ in range(seeds)])
    return per_seed, taus


def test_bootstrap_slope_recovers_both_hypotheses_exactly_without_noise():
    cfg = fair.FAIR_CPU
    sizes = cfg.ds_sizes
    iters = {n: fair.iters_per_epoch(n, cfg) for n in sizes}
    # the seeds' rule: the best τ_epoch is the same at every size -> best λ ∝ 1/N
    per_seed, taus = _curves(lambda n: 1.1, sizes, 2)
    b = bootstrap_slope(per_seed, taus, cfg.ds_lr, iters, draws=50)
    assert b["slope"] == pytest.approx(-1.0, abs=1e-9) and b["lo"] == pytest.approx(-1.0, abs=1e-9)
    assert b["hi"] == pytest.approx(-1.0, abs=1e-9) and b["edge_share"] == 0.0
    # τ a fixed fraction of the run (τ_iter = 100 steps at every size) -> best λ constant
    per_seed, taus = _curves(lambda n: 100.0 / iters[n], sizes, 2)
    b = bootstrap_slope(per_seed, taus, cfg.ds_lr, iters, draws=50)
    assert b["slope"] == pytest.approx(0.0, abs=1e-9)


def test_bootstrap_interval_widens_with_seed_noise_and_contains_the_point():
    cfg = fair.FAIR_CPU
    iters = {n: fair.iters_per_epoch(n, cfg) for n in cfg.ds_sizes}
    width = []
    for noise in (0.005, 0.04):
        per_seed, taus = _curves(lambda n: 1.0, cfg.ds_sizes, 3, noise=noise, rng=np.random.default_rng(1))
        b = bootstrap_slope(per_seed, taus, cfg.ds_lr, iters, draws=400, seed=3)
        assert b["lo"] < b["hi"] and b["lo"] <= b["slope"] <= b["hi"]
        width.append(b["hi"] - b["lo"])
        again = bootstrap_slope(per_seed, taus, cfg.ds_lr, iters, draws=400, seed=3)
        assert (again["draws"] == b["draws"]).all()  # reproducible
    assert width[1] > 2 * width[0]


# --- the n-gram baseline ------------------------------------------------------------------------


def test_ngram_is_a_distribution_over_bytes_at_every_order_and_position():
    rng = np.random.default_rng(0)
    train = rng.integers(97, 101, 3000)  # four symbols: most histories seen, some not
    for order in (1, 2, 3, 5):
        m = ngram.NGram(train, order)
        for prefix in ([97], [98, 99], [97, 100, 98, 97], [7, 7, 7, 7]):  # [7...]: never seen
            windows = np.array([prefix + [b] for b in range(256)])
            total = np.exp(-m.nll(windows)[:, -1]).sum()
            assert total == pytest.approx(1.0, abs=1e-12), (order, prefix)
    # order 1 is the add-one unigram
    m1 = ngram.NGram(train, 1)
    counts = np.bincount(train, minlength=256)
    assert m1.nll(np.array([[97, 98]]))[0, 0] == pytest.approx(-math.log((counts[98] + 1) / (3000 + 256)))


def test_ngram_learns_a_deterministic_stream_and_sees_only_its_window():
    period = [1, 2, 1, 3]  # after 1 comes 2 or 3; after (2, 1) always 3, after (3, 1) always 2
    train = np.tile(period, 20000)  # long: the add-one prior's mass is negligible
    val = torch.tensor(np.tile(period, 60), dtype=torch.uint8)
    win = eval_windows(val, 8, 16).numpy().astype(np.int64)
    nll = ngram.NGram(train, 3).nll(win)
    assert nll[:, 1:].max() < 0.01  # two bytes of history: the next one is certain
    # the first target has one byte of history within its window: after a 1 it is a coin toss
    first_is_1 = win[:, 0] == 1
    assert first_is_1.any() and nll[first_is_1, 0].min() > 0.6
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert ngram.NGram(train, 1).nll(win).mean() == pytest.approx(entropy, abs=0.02)


def test_ngram_baseline_scores_the_models_evaluation_windows():
    val = torch.arange(200, dtype=torch.int64).remainder(256).to(torch.uint8)
    w = eval_windows(val, 16, 5)
    assert w.shape == (5, 17) and int(w[0, 0]) == 0 and int(w[-1, -1]) == 200 - 2
    b = ngram.baseline(torch.tensor(np.tile(np.arange(256), 4), dtype=torch.uint8), val, 16, 5, orders=(1, 2))
    assert b[2] < b[1]  # in the training stream each byte is followed by its successor, as in val


# --- the grid -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [fair.FAIR_CPU, fair.FAIR_GPU], ids=lambda c: c.name)
def test_dataset_design_fixes_steps_and_brackets_both_predictions(cfg):
    jobs = fair.dataset_jobs(cfg)
    assert {fair.job_steps(j, cfg) for j in jobs} == {cfg.ds_steps}
    assert cfg.ds_seeds >= 2 and max(cfg.ds_sizes) / min(cfg.ds_sizes) >= 4
    for n in cfg.ds_sizes:
        grid = fair.tau_window(n, cfg)
        ratios = np.diff(np.log(grid))
        assert np.allclose(ratios, math.log(ROOT2))  # √2 steps
        for p in fair.predictions(n, cfg).values():  # each hypothesis' optimum is a margin inside the window
            assert grid[0] * cfg.ds_margin <= p * (1 + 1e-12) and p <= grid[-1] / cfg.ds_margin * (1 + 1e-12)
        here = [j for j in jobs if j["dataset_tokens"] == n]
        assert sum(j["mode"] == "none" for j in here) == cfg.ds_seeds  # no decay, every seed
    # the rule predicts a constant τ_epoch; the rival a τ_iter constant, i.e. τ_epoch ∝ 1/N
    n0, n1 = cfg.ds_sizes[0], cfg.ds_sizes[-1]
    p0, p1 = fair.predictions(n0, cfg), fair.predictions(n1, cfg)
    assert p0["tau_epoch_constant"] == p1["tau_epoch_constant"]
    assert p0["tau_iter_constant"] / p1["tau_iter_constant"] == pytest.approx(n1 / n0)
    with pytest.raises(ValueError, match="does not divide"):
        fair.epochs_at(3 * cfg.ctx * cfg.batch, cfg)


def test_width_design_has_controls_and_enough_seeds():
    cfg = fair.FAIR_CPU
    jobs = fair.width_jobs(cfg)
    assert cfg.w_seeds >= 3
    none = {j["width"] for j in jobs if j["mode"] == "none"}
    assert none == {cfg.w_widths[0], cfg.w_widths[-1]}
    # the base width runs once for both λ modes: they are the same run there (next test)
    assert not [j for j in jobs if j["mode"] == "lambda_width" and j["width"] == cfg.w_widths[0]]


# --- the width modes: identical at the base width, different above it --------------------------


def _tiny_corpus():
    g = torch.Generator().manual_seed(0)
    text = torch.randint(97, 105, (4096,), generator=g, dtype=torch.int64).to(torch.uint8)
    return Corpus(train=text[:3000], val=text[3000:], n_files=1, n_val_files=1, total_bytes=4096, sha256="0" * 16,
                  python="test")


TINY = fair.FairConfig(name="tiny", layers=1, ctx=8, batch=4, head_dim=4, warmup_frac=0.02, val_windows=8,
                       ds_width=8, ds_lr=1e-2, ds_steps=8, ds_sizes=(128, 256), ds_pilot_size=128, ds_pilot_tau=1.0,
                       ds_margin=2.0, ds_seeds=2, w_widths=(8, 16), w_lrs=(1e-2, 3e-2), w_tokens=128, w_epochs=2,
                       w_tau_epochs=8.0, w_ref_lr=1e-2, w_seeds=1)


def _run(mode, width, corpus):
    job = dict(experiment="width", dataset_tokens=TINY.w_tokens, width=width, mode=mode, lr=3e-2,
               tau_epochs=TINY.w_tau_epochs, seed=0, epochs=TINY.w_epochs)
    return train_run(job, TINY.lm(), corpus)


def test_width_modes_are_the_same_run_at_the_base_width_and_differ_above_it():
    corpus = _tiny_corpus()
    a, b = _run("lambda_fixed", 8, corpus), _run("lambda_width", 8, corpus)
    assert a["weight_decay"] == b["weight_decay"] and a["steps"] == b["steps"] == 2 * 4
    assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]  # bit for bit
    c, d = _run("lambda_fixed", 16, corpus), _run("lambda_width", 16, corpus)
    assert c["val_loss"] != d["val_loss"]  # above it the hidden layers' decay differs by width_mult
    assert _run("none", 8, corpus)["val_loss"] != a["val_loss"]  # the λ = 0 control is not a no-op twin


def test_lambda_width_groups_scale_decay_with_width():
    from adamw_tau.experiments.lm.tiny_gpt import TinyGPT
    from adamw_tau.scaling.mup import mup_param_groups
    model, base = TinyGPT(16, 1, 8, head_dim=4), TinyGPT(8, 1, 8, head_dim=4)
    for g in mup_param_groups(model, base, lr=1e-2, weight_decay=0.5):
        if g["mup_class"] == "hidden":
            assert g["weight_decay"] == 0.5 * g["width_mult"] == 1.0
            assert g["lr"] * g["weight_decay"] == pytest.approx(1e-2 * 0.5)  # per-step decay kept


def test_a_job_carrying_epochs_runs_that_many():
    corpus = _tiny_corpus()
    job = dict(experiment="dataset", dataset_tokens=256, width=8, mode="tau", lr=1e-2, tau_epochs=1.0, seed=0,
               epochs=fair.epochs_at(256, TINY))
    r = train_run(job, TINY.lm(), corpus)
    assert r["epochs"] == 1 and r["steps"] == TINY.ds_steps == 8


def test_summary_of_a_small_dataset_grid(tmp_path):
    rows = []
    for job in fair.dataset_jobs(fair.FAIR_CPU):
        t = job["tau_epochs"]
        m = fair.iters_per_epoch(job["dataset_tokens"], fair.FAIR_CPU)
        v = 2.5 if math.isnan(t) else 2.0 + 0.1 * math.log(t * m / 128.0) ** 2 + 0.01 * job["seed"]
        rows.append({**job, "val_loss": v})
    s = fair_results.summarize(rows, fair.FAIR_CPU, "dataset", corpus=None)
    assert s["boot"]["slope"] == pytest.approx(0.0, abs=1e-9)  # τ_iter 128 at every size, by construction
    assert all(d["opt"]["edge"] is None for d in s["sizes"])
    assert set(s["seed_slopes"]) == {0, 1}


@pytest.mark.slow
def test_tiny_dataset_design_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    from adamw_tau.experiments.lm import corpus as stdlib_corpus
    from adamw_tau.experiments.lm import fair_sweep
    monkeypatch.setattr(stdlib_corpus, "load", lambda root=None: _tiny_corpus())
    r = fair_sweep.run(str(tmp_path), TINY, "dataset", workers=1, progress=False)
    out = capsys.readouterr().out
    assert "slope of log best λ vs log N" in out and "n-gram best" in out
    assert len(fair.dataset_jobs(TINY)) == 2 * ((5 + 1) + (7 + 1))
    import csv
    rows = list(csv.DictReader(Path(r["csv"]).read_text().splitlines()))
    assert len(rows) == len(fair.dataset_jobs(TINY)) and {int(x["steps"]) for x in rows} == {TINY.ds_steps}
    fair_sweep.run(str(tmp_path), TINY, "dataset", workers=1, progress=False)  # nothing left: no new rows
    assert len(list(csv.DictReader(Path(r["csv"]).read_text().splitlines()))) == len(rows)
    assert "0 to run" in capsys.readouterr().out
    p = fair_sweep.run(str(tmp_path), TINY, "dataset", workers=1, progress=False, pilot=True)
    assert "set ds_pilot_tau" in capsys.readouterr().out and p["pilot"]["x"] > 0


def test_cli_plans_the_fair_grids(capsys):
    from adamw_tau import cli
    assert cli.main(["sweep", "lm-fair", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "1024 steps" not in out and "16 epochs of 64 steps" in out and "4 epochs of 256 steps" in out
    assert cli.main(["sweep", "lm-fair", "--plan", "--grid", "gpu", "--design", "width"]) == 0
    with pytest.raises(SystemExit, match="lm-fair only"):
        cli.main(["sweep", "lm", "--design", "width"])


def test_pilot_is_the_middle_size_one_seed_a_wide_grid():
    cfg = fair.FAIR_GPU
    js = fair.pilot_jobs(cfg)
    assert {j["dataset_tokens"] for j in js} == {cfg.ds_pilot_size} and {j["seed"] for j in js} == {0}
    taus = [j["tau_epochs"] for j in js if j["mode"] == "tau"]
    assert min(taus) <= cfg.ds_pilot_tau / 8 and max(taus) >= cfg.ds_pilot_tau * 8
    assert sum(j["mode"] == "none" for j in js) == 1


def test_summary_only_reports_a_partial_grid_without_training(tmp_path, monkeypatch, capsys):
    from adamw_tau.experiments.lm import corpus as stdlib_corpus
    from adamw_tau.experiments.lm import fair_sweep
    from adamw_tau.experiments.lm.results import append_row
    c = _tiny_corpus()
    monkeypatch.setattr(stdlib_corpus, "load", lambda root=None: c)
    monkeypatch.setattr(fair_sweep, "train_run", lambda *a, **k: pytest.fail("--summary must not train"))
    jobs = fair.dataset_jobs(TINY)[:3]
    for j, v in zip(jobs, (2.0, 1.9, 1.95)):
        append_row(str(tmp_path / "lm_fair_dataset.csv"),
                   {"config": TINY.name, **c.describe(), **j, "weight_decay": 1.0, "iters_per_epoch": 4, "steps": 8,
                    "train_loss": v, "val_loss": v, "seconds": 0.1, "device": "cpu"})
    fair_sweep.run(str(tmp_path), TINY, "dataset", workers=1, progress=False, summary_only=True)
    out = capsys.readouterr().out
    assert f"partial: 3 of {len(fair.dataset_jobs(TINY))} runs" in out
    assert "val by τ_epoch so far: 0.5: 2.000  0.707: 1.900  1: 1.950" in out
