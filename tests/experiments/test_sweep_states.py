"""`adamw-tau sweep states`: tiny runs (seconds) of the 8-bit-states quality check: every row is
in the CSV with its columns, a failing row reports its error and the others go on, a missing
package leaves its row out and says why, fp32 states passed off as 8-bit fail their row, runs
are deterministic (in process and in workers), and the anchors' λ is our τ."""
import dataclasses
import math
import sys

import pytest
import torch

from adamw_tau import AdamWTau, cli
from adamw_tau.experiments.lm import corpus as stdlib_corpus
from adamw_tau.experiments.quality import report, states, training

TINY = dataclasses.replace(training.STATES_QUICK, name="tiny", width=16, layers=1, head_dim=8, ctx=16, batch=4,
                           steps=6, eval_every=3, log_every=2, val_windows=16, tau_frac=0.5)


def _bnb_ok() -> bool:
    try:
        import bitsandbytes  # noqa: F401
        return True
    except ImportError:
        return False


def test_rows_columns_and_a_failing_row(tmp_path, monkeypatch, capsys):
    real = states.make_optimizer

    def planted(row, model, cfg, backend):
        if row == "ours_8bit":
            raise RuntimeError("planted failure of the 8-bit row")
        return real(row, model, cfg, backend)
    monkeypatch.setattr(states, "make_optimizer", planted)
    r = states.run(str(tmp_path), TINY, rows=("ours_fp32", "ours_8bit"), progress=False)
    out = capsys.readouterr().out
    rows = report.read_rows(tmp_path / "states_tiny.csv")
    assert list(rows[0]) == states.COLUMNS and [x["row"] for x in rows] == ["ours_fp32", "ours_8bit"]
    fp32, q8 = rows
    assert fp32["status"] == "ok" and math.isfinite(float(fp32["final_val_loss"])) and fp32["note"] == ""
    assert float(fp32["state_bytes_per_param"]) == 8.0  # two fp32 moments a parameter
    assert int(fp32["steps_done"]) == TINY.steps and fp32["corpus_sha256"] == stdlib_corpus.load().sha256
    assert q8["status"] == "failed" and q8["note"] == "RuntimeError: planted failure of the 8-bit row"
    assert q8["final_val_loss"] == "" and q8["gap_vs_ours_fp32"] == ""
    assert "ours 8-bit vs ours fp32: not measured (ours_8bit failed: RuntimeError: planted" in out
    curves = report.read_rows(tmp_path / "states_tiny_curves.csv")
    assert list(curves[0]) == states.CURVE_COLUMNS
    vals = [float(c["val_loss"]) for c in curves if c["run"] == "ours_fp32" and c["val_loss"]]
    assert len(vals) == 2 and r["rows"]["ours_fp32"]["final_val_loss"] == vals[-1]
    assert (tmp_path / "states_tiny.png").stat().st_size > 10_000


def test_the_8bit_row_in_this_tree_runs_or_says_why(tmp_path):
    r = states.run(str(tmp_path), TINY, rows=("ours_fp32", "ours_8bit"), progress=False)["rows"]["ours_8bit"]
    if r["status"] == "ok":  # the states are really 8-bit
        assert r["state_bytes_per_param"] < 8.0 and math.isfinite(r["final_val_loss"])
    else:
        assert r["status"] == "failed" and "8bit" in r["note"] and r["note"].split(":")[0].endswith("Error")


def test_fp32_states_passed_off_as_8bit_fail_the_row(tmp_path, monkeypatch):
    real = states.make_optimizer
    monkeypatch.setattr(states, "make_optimizer",
                        lambda row, *a: real("ours_fp32" if row == "ours_8bit" else row, *a))
    r = states.run(str(tmp_path), TINY, rows=("ours_fp32", "ours_8bit"), progress=False)["rows"]
    assert r["ours_fp32"]["status"] == "ok"
    assert r["ours_8bit"]["status"] == "failed" and "8.00 bytes of state per element" in r["ours_8bit"]["note"]


def test_a_missing_package_leaves_its_row_out_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes raises ImportError
    r = states.run(str(tmp_path), TINY, rows=("ours_fp32", "bnb_8bit"), progress=False)["rows"]
    assert r["bnb_8bit"]["status"] == "left out"
    assert "bitsandbytes is not installed" in r["bnb_8bit"]["note"] and "pip install" in r["bnb_8bit"]["note"]
    assert "bnb_8bit       left out" in capsys.readouterr().out
    assert r["ours_fp32"]["status"] == "ok"


@pytest.mark.slow  # full tier: spawns workers, 11 CPU s measured
def test_runs_are_deterministic_in_process_and_in_workers(tmp_path):
    rows = ("ours_fp32", "bnb_8bit") if _bnb_ok() else ("ours_fp32",)
    a = states.run(str(tmp_path / "a"), TINY, rows=rows, progress=False)
    b = states.run(str(tmp_path / "b"), TINY, rows=rows, progress=False)
    c = states.run(str(tmp_path / "c"), TINY, rows=rows, workers=2, progress=False)
    for row in rows:
        assert a["rows"][row]["status"] == "ok", a["rows"][row]["note"]
        assert a["rows"][row]["final_val_loss"] == b["rows"][row]["final_val_loss"] == c["rows"][row]["final_val_loss"]
    assert report.read_rows(a["curves"]) == report.read_rows(b["curves"]) == report.read_rows(c["curves"])


def test_the_anchors_lambda_is_our_tau():
    """With zero gradients only the decay moves the weights: torch.optim.AdamW with the λ of
    lambda_groups and AdamWTau with tau_groups shrink them alike under the cosine schedule."""
    cfg = dataclasses.replace(TINY, steps=40, tau_frac=0.1, warmup_frac=0.1)
    w = {k: torch.nn.Linear(8, 8) for k in ("ours", "torch")}
    w["torch"].load_state_dict(w["ours"].state_dict())
    opts = {"ours": AdamWTau(training.tau_groups(w["ours"], cfg), lr=cfg.lr, backend="reference"),
            "torch": torch.optim.AdamW(training.lambda_groups(w["torch"], cfg), lr=cfg.lr)}
    scheds = {k: training.scheduler(o, cfg) for k, o in opts.items()}
    start = w["ours"].weight.detach().clone()
    for _ in range(cfg.steps):
        for k in opts:
            for p in w[k].parameters():
                p.grad = torch.zeros_like(p)
            opts[k].step()
            scheds[k].step()
    ratio = w["ours"].weight / start
    assert float(ratio.detach().abs().max()) < 0.1  # the decay did act: τ_iter is 4 steps of 40
    torch.testing.assert_close(w["ours"].weight, w["torch"].weight, rtol=1e-5, atol=0)
    assert torch.equal(w["ours"].bias, w["torch"].bias)  # vectors are not decayed: unchanged in both


def test_summary_applies_the_1_percent_bar():
    def rows(gap):
        return [dict(row="ours_fp32", status="ok", note="", final_val_loss=2.0, gap_vs_ours_fp32=0.0,
                     state_bytes_per_param=8.0, seconds=1.0, package="p"),
                dict(row="ours_8bit", status="ok", note="", final_val_loss=2.0 * (1 + gap), gap_vs_ours_fp32=gap,
                     state_bytes_per_param=2.0, seconds=1.0, package="p")]
    assert "+0.50% final val loss; within 1% (the bar): yes" in states.summary_text(rows(0.005))
    assert "+1.50% final val loss; within 1% (the bar): NO" in states.summary_text(rows(0.015))


def test_cli_states_rejects_a_missing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        cli.main(["sweep", "states", "--quick", "--device", "cuda"])


def test_bad_settings_stop_before_training(monkeypatch):
    monkeypatch.setattr(states, "run_row", lambda *a, **k: pytest.fail("trained despite a bad setting"))
    with pytest.raises(SystemExit, match="--medium is not an option of this sweep"):
        cli.main(["sweep", "states", "--medium"])
    with pytest.raises(SystemExit, match="--workers is not an option"):
        cli.main(["sweep", "masters", "--quick", "--workers", "2"])
    with pytest.raises(SystemExit, match="--rows is not an option"):
        cli.main(["sweep", "masters", "--quick", "--rows", "ours_fp32"])
    with pytest.raises(SystemExit, match=r"unknown rows \['torchao_2bit'\]"):
        cli.main(["sweep", "states", "--quick", "--rows", "ours_fp32,torchao_2bit"])
    with pytest.raises(SystemExit, match="--lr must be a finite number > 0, got -0.1"):
        cli.main(["sweep", "states", "--quick", "--lr", "-0.1"])
    with pytest.raises(ValueError, match="τ_iter = tau_frac x steps = 0.5"):
        dataclasses.replace(TINY, steps=4, tau_frac=0.125)
    cfg = training.vary(training.STATES_QUICK, lr=1e-3, seed=2)
    assert (cfg.name, cfg.lr, cfg.seed) == ("quick_lr0.001_seed2", 1e-3, 2) and cfg.steps == training.STATES_QUICK.steps
