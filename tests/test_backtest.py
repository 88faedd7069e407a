"""`livetrain backtest`: the policies' scores on a batch, and the command's interface (JSON, table, plot, errors)."""

from __future__ import annotations

import json
import shutil

import numpy as np

from infra.local.backtest import POLICIES, score_policies


def test_each_policy_is_scored_on_the_trades_it_takes_with_intervals():
    rng = np.random.default_rng(0)
    n = 600
    labels = (rng.random(n) < 0.4).astype(np.int64)
    pnl = np.where(labels == 1, 100.0, -100.0)
    trades = {"label": labels, "pnl": pnl, "open_ms": np.arange(n, dtype=np.int64) * 30_000}
    coin = (rng.random(n) < 0.5).astype(np.int64)
    predictions = {"retrain": (labels + 0.5 * rng.random(n), labels), "frozen": (rng.random(n), coin),
                   "none": (np.zeros(n), np.ones(n, np.int64))}

    scored = score_policies(trades, predictions, dependence_seconds=1500)

    assert set(scored) == set(POLICIES)
    perfect, none = scored["retrain"], scored["none"]
    assert perfect["precision"]["value"] == 1.0 and perfect["trades_taken"] == labels.sum()
    assert np.isclose(perfect["lift"]["value"], 1 - labels.mean())
    assert perfect["pnl"]["value"] == 100.0 * labels.sum()
    assert np.isclose(none["precision"]["value"], labels.mean()) and none["lift"]["value"] == 0.0
    assert none["pnl"]["value"] == pnl.sum() and scored["frozen"]["pnl"]["value"] == pnl[coin == 1].sum()
    for entry in scored.values():
        for metric in ("precision", "lift", "pnl"):
            assert set(entry[metric]) == {"value", "lower", "upper"}
            assert entry[metric]["lower"] <= entry[metric]["value"] <= entry[metric]["upper"]
    assert none["pnl"]["lower"] < none["pnl"]["value"] < none["pnl"]["upper"]


def test_the_backtest_command_scores_the_next_batch_and_writes_its_json_and_plot(run_cli, make_batch, tmp_path):
    batches = tmp_path / "batches"
    for name, seed in (("b1", 0), ("b2", 1)):
        shutil.copytree(make_batch(trades=300, seed=seed), batches / name)
    out, results = tmp_path / "out", tmp_path / "backtest.json"

    done = run_cli("backtest", "--batches-dir", batches, "--json", results, "--out", out, "--max-jobs", 1,
                   "--max-parallel-jobs", 1)

    assert done.returncode == 0, done.stderr
    report = json.loads(results.read_text())
    assert report["runs"][0]["batch_id"] == "b1" and report["runs"][0]["status"] == "Failed"  # too short a batch
    [scored] = report["scored_batches"]
    assert scored["batch_id"] == "b2" and scored["first_open_ms"] < scored["last_open_ms"]
    for policy in POLICIES:  # no model was approved: every policy took every trade of b2
        [entry] = report[policy]
        assert entry["batch_id"] == "b2" and entry["model"] is None and entry["lift"]["value"] == 0
        assert {"precision", "lift", "pnl"} <= set(entry) and set(entry["pnl"]) == {"value", "lower", "upper"}
    trades = (batches / "b2" / "transactions.csv").read_text().splitlines()[1:]
    total = sum(float(row.split(",")[10]) for row in trades)
    assert report["total_pnl"] == {policy: report["none"][0]["pnl"]["value"] for policy in POLICIES}
    assert np.isclose(report["total_pnl"]["none"], total)
    assert "not enough data" in report["note"] and "not enough data" in done.stdout
    assert "b2" in done.stdout and (out / "backtest.png").stat().st_size > 10_000


def test_bad_backtest_arguments_get_one_line_and_exit_2(run_cli, make_batch, tmp_path):
    shutil.copytree(make_batch(trades=300, seed=0), tmp_path / "only" / "b1")
    for args, words in ((["--market", "regime-switching"], "--batches K"),
                        (["--batches-dir", tmp_path / "only"], "at least two"),
                        (["--batches-dir", tmp_path / "missing"], "not a directory")):
        done = run_cli("backtest", *args, "--out", tmp_path / "out")
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1
