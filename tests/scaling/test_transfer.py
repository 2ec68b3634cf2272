"""`adamw-tau transfer` against the formula, and `adamw-tau published` against its sources' numbers."""
import json
import math

import pytest

from adamw_tau import cli
from adamw_tau.scaling import published, transfer


def test_issue_example(capsys):
    # lr 1e-3, λ 0.1, 5e4 examples, batch 128 → 5e5 examples, same batch, width ×4:
    # M 390.625 → 3906.25 (×10); hidden lr ÷4 → λ × 4/10 = 0.04; vector lr kept → λ ÷ 10 = 0.01
    assert cli.main(["transfer", "--lr", "1e-3", "--weight-decay", "0.1", "--dataset-size", "5e4",
                     "--batch-size", "128", "--to-dataset-size", "5e5", "--width-mult", "4", "--json"]) == 0
    out = capsys.readouterr().out
    r = json.loads(out.strip().splitlines()[-1])
    g = r["groups"]
    assert math.isclose(g["hidden"]["weight_decay"], 0.04) and math.isclose(g["hidden"]["lr"], 2.5e-4)
    assert math.isclose(g["vector"]["weight_decay"], 0.01) and math.isclose(g["vector"]["lr"], 1e-3)
    assert math.isclose(g["output"]["weight_decay"], 0.04) and math.isclose(g["input"]["weight_decay"], 0.01)
    assert math.isclose(r["from"]["tau_epochs"], 25.6) and math.isclose(r["to"]["tau_epochs"], 25.6)
    assert math.isclose(r["to"]["tau_iters"], 1e5)
    assert "τ_iter'  = τ_epoch · M'" in out and "η / width_mult" in out


@pytest.mark.parametrize("lr,lam,n0,b0,n1,b1,w", [
    (3e-4, 0.1, 2e12, 4e6, 2e11, 4e6, 1.0),     # 10x less data: λ x10
    (1e-3, 0.05, 1e6, 256, 1e6, 1024, 1.0),     # 4x the batch: M ÷4, so λ x4 at the same lr
    (2e-3, 0.3, 6e4, 64, 1.2e6, 128, 8.0),      # all three at once
    (5e-4, 0.01, 1e5, 100, 1e5, 100, 0.5),      # narrower: hidden lr x2, λ ÷2
])
def test_transfer_matches_the_formula(lr, lam, n0, b0, n1, b1, w):
    r = transfer.transfer(lr, weight_decay=lam, dataset_size=n0, batch_size=b0, to_dataset_size=n1,
                           to_batch_size=b1, width_mult=w)
    m0, m1 = n0 / b0, n1 / b1
    tau_epoch = 1.0 / (lr * lam * m0)
    for kind, lr_mult in (("hidden", 1 / w), ("output", 1 / w), ("input", 1.0), ("vector", 1.0)):
        g = r["groups"][kind]
        assert math.isclose(g["lr"], lr * lr_mult)
        assert math.isclose(g["weight_decay"], lam * (m0 / m1) / lr_mult)
        # the point of it all: τ_epoch on the target equals the tuned one for every group
        assert math.isclose(1.0 / (g["lr"] * g["weight_decay"] * m1), tau_epoch)


def test_transfer_from_tau_epochs_equals_from_lambda():
    a = transfer.transfer(1e-3, weight_decay=0.1, dataset_size=5e4, batch_size=128, to_dataset_size=1e6)
    b = transfer.transfer(1e-3, tau_epochs=25.6, dataset_size=5e4, batch_size=128, to_dataset_size=1e6)
    for kind in transfer.GROUP_KINDS:
        assert math.isclose(a["groups"][kind]["weight_decay"], b["groups"][kind]["weight_decay"])
    assert math.isclose(b["from"]["weight_decay"], 0.1)


def test_transfer_mup_kinds_are_mup_param_groups_kinds():
    from adamw_tau.scaling import mup
    assert set(transfer.GROUP_KINDS) == set(mup.CLASSES)


@pytest.mark.parametrize("kwargs,match", [
    (dict(weight_decay=0.1, tau_epochs=2.0), "exactly one of --weight-decay"),
    (dict(), "exactly one of --weight-decay"),
    (dict(weight_decay=-0.1), "--weight-decay must be a finite number > 0"),
    (dict(weight_decay=0.1, width_mult=0), "--width-mult must be a finite number > 0"),
    (dict(weight_decay=0.1, to_batch_size=1e9), "--to-batch-size .* larger than --to-dataset-size"),
])
def test_transfer_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        transfer.transfer(1e-3, dataset_size=5e4, batch_size=128, to_dataset_size=5e5, **kwargs)


def test_transfer_cli_errors_name_the_flag(capsys):
    with pytest.raises(SystemExit, match="--lr must be a finite number > 0"):
        cli.main(["transfer", "--lr", "0", "--weight-decay", "0.1", "--dataset-size", "5e4", "--batch-size", "128",
                  "--to-dataset-size", "5e5"])
    with pytest.raises(SystemExit):  # argparse: a required flag is missing
        cli.main(["transfer", "--lr", "1e-3", "--weight-decay", "0.1", "--dataset-size", "5e4", "--batch-size", "128"])
    assert "--to-dataset-size" in capsys.readouterr().err


def test_published_rows_follow_from_their_numbers():
    rows = {r["run"]: r for r in published.rows()}
    # LLaMA 7B: τ_iter = 1/(3e-4 · 0.1) = 33,333; 1.0T / 4M = 250,000 steps; 0.1333 of the run
    r = rows["LLaMA 7B"]
    assert math.isclose(r["tau_iters"], 1e5 / 3) and r["iterations"] == 250_000
    assert math.isclose(r["tau_fraction_of_run"], 2 / 15) and math.isclose(r["tau_epochs"], 2 / 15)
    # Llama 2 70B: 1/(1.5e-4 · 0.1) = 66,667 over 2.0T / 4M = 500,000 steps
    assert math.isclose(rows["Llama 2 70B"]["tau_fraction_of_run"], 2 / 15)
    # StableLM-3B-4E1T: 955,000 steps of 4·256·4096 tokens, 4 epochs of 1T unique tokens
    s = rows["StableLM-3B-4E1T"]
    assert s["iterations"] == 955_000 and math.isclose(s["tau_iters"], 31_250)
    assert math.isclose(s["tau_epochs"], 31_250 / (955_000 * 1e12 / s["tokens"]))
    assert 3.9e12 < s["tokens"] < 4.1e12
    for r in rows.values():
        assert r["source"] and math.isclose(r["tau_iters"], 1 / (r["lr"] * r["weight_decay"]))


def test_published_cli_markdown_has_every_run_and_its_source(capsys):
    assert cli.main(["published"]) == 0
    out = capsys.readouterr().out
    for run in published.RUNS:
        assert f"| {run.name} |" in out
    assert "arXiv:2302.13971" in out and "arXiv:2307.09288" in out and "stablelm-3b-4e1t.yml" in out
