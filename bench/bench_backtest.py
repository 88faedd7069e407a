"""Does freshness pay? `livetrain backtest` on a regime-switching market and on a stationary one, over seeds.

Each cell is the product's backtest (infra/local/backtest.py): BATCHES consecutive batches of 10,000 trades (one
every 30 s, about 83 h each) of one simulated market, the pipeline run on every batch but the last with a small
tuning budget (4 training jobs), and three policies scored on each next batch: retrain (with the gate), frozen
(the first approved model) and none (every trade). Seeds 0 … SEEDS−1 of each market, none chosen.

- regime-switching: the planted pattern flips between momentum and reversal every 96-192 h (streamer/market.py);
  a model trained before a switch learned the opposite of what follows. Goal: retrain ≥ frozen.
- planted-signal (stationary, the control): the pattern never changes; freshness should not matter.

Per market: the mean lift per scored batch of each policy, and retrain − frozen, averaged over seeds with a 95 %
t interval across seeds (a seed is one independent market); total P&L per policy; how often retrain's total P&L
beat frozen's. Results in bench/results/backtest.json, plot in bench/results/backtest.png.

Detection: the live-quality monitor flags a window when the serving model's lift has a lower bound below 0 (the
same statistic, processing/monitor.py). With one batch as the window and the `retrain` policy's model in service,
each sign switch of the regime schedule inside the scored span is "detected" at the first scored batch at or
after it that is flagged; the table gives the fraction detected, the delay in batches, and how often a batch
with no switch in it or in the batch before was flagged (false alarms).

Live scoring's cost: ticks/s through the streamer's bot and store (the local MongoDB-wire server) with live
scoring off and on (the local endpoint through boto3, ground truth to moto's S3), with a trade every 30 s (the
default) and on every tick (the worst case: one request per tick).
`python -m bench bench_backtest` (BENCH_BACKTEST_SEEDS, default 5; BENCH_BACKTEST_BATCHES, default 5):
about 15 min per market on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.measure import table

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = 5
BATCHES = 5
MARKETS = tuple(os.environ.get("BENCH_BACKTEST_MARKETS", "regime-switching,planted-signal").split(","))


def run(market: str, seed: int, batches: int) -> dict:
    """One `livetrain backtest`, in its own process as a user runs it."""
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as out:
        results = Path(out) / "backtest.json"
        done = subprocess.run([str(Path(sys.executable).parent / "livetrain"), "backtest", "--market", market,
                               "--batches", str(batches), "--seed", str(seed), "--max-jobs", "4",
                               "--max-parallel-jobs", "2", "--json", str(results), "--out", str(Path(out) / "run")],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"backtest {market} seed {seed} failed: {done.stderr[-2000:]}")
        return json.loads(results.read_text())


def mean_interval(values: list[float]) -> str:
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return f"{values.mean():.3f}" if len(values) else "-"
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return f"{values.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


def mean_lift(report: dict, policy: str) -> float:
    return float(np.mean([entry["lift"]["value"] for entry in report[policy]]))


def summary(reports: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for market, runs in reports.items():
        lifts = {policy: [mean_lift(r, policy) for r in runs] for policy in ("retrain", "frozen")}
        pnl = {policy: [r["total_pnl"][policy] for r in runs] for policy in ("retrain", "frozen", "none")}
        approved = sum(bool(run["package"]) for r in runs for run in r["runs"])
        rows.append({
            "market": market, "seeds": len(runs), "approved / runs": f"{approved}/{sum(len(r['runs']) for r in runs)}",
            "retrain lift": mean_interval(lifts["retrain"]), "frozen lift": mean_interval(lifts["frozen"]),
            "retrain − frozen lift": mean_interval(np.subtract(lifts["retrain"], lifts["frozen"])),
            "total P&L retrain / frozen / none (mean)": " / ".join(f"{np.mean(pnl[p]):,.0f}" for p in pnl),
            "retrain P&L > frozen": f"{sum(a > b for a, b in zip(pnl['retrain'], pnl['frozen'], strict=True))}"
                                    f"/{len(runs)}"})
    return rows


def detection(reports: list[dict]) -> dict:
    """Sign switches of the regime-switching market seen by the monitor's rule (see the module's docstring)."""
    from datetime import datetime

    from streamer.market import MarketSettings, regime_schedule

    settings = MarketSettings(market="regime-switching")
    start_ms = datetime.fromisoformat(settings.start.replace("Z", "+00:00")).timestamp() * 1000
    detected, delays, switches, quiet, false_alarms = 0, [], 0, 0, 0
    for report in reports:
        times = [start_ms + hour * 3.6e6 for hour, _ in regime_schedule(settings, report["seed"])[1:]]
        batches = report["scored_batches"]
        flagged = [entry["lift"]["lower"] < 0 for entry in report["retrain"]]
        hit = [next((i for i, b in enumerate(batches) if b["last_open_ms"] >= t), None) for t in times
               if batches and batches[0]["first_open_ms"] <= t <= batches[-1]["last_open_ms"]]
        for first in hit:
            switches += 1
            found = next((i for i in range(first, len(batches)) if flagged[i]), None)
            if found is not None:
                detected += 1
                delays.append(found - first)
        changed = set(hit) | {i + 1 for i in hit}
        for i, flag in enumerate(flagged):
            if i not in changed:
                quiet += 1
                false_alarms += flag
    return {"switches in the scored span": switches, "detected": f"{detected}/{switches}",
            "delay in batches (mean, max)": f"{np.mean(delays):.1f}, {max(delays)}" if delays else "-",
            "flagged without a switch": f"{false_alarms}/{quiet}"}


def plot(reports: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"retrain": "tab:green", "frozen": "tab:blue", "none": "tab:grey"}
    figure, axes = plt.subplots(1, len(reports), figsize=(6 * len(reports), 4), sharey=True, squeeze=False)
    for axis, (market, runs) in zip(axes[0], reports.items(), strict=True):
        for policy, colour in colours.items():
            for r in runs:
                axis.plot(np.arange(1, len(r[policy]) + 1), np.cumsum([e["pnl"]["value"] for e in r[policy]]),
                          color=colour, alpha=0.6, label=policy if r is runs[0] else None)
        axis.axhline(0, color="black", linewidth=0.5)
        axis.set_title(f"{market}: cumulative P&L per seed", fontsize=9)
        axis.set_xlabel("scored batch")
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("points")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


SCORED_TICKS = 20_000


def scoring_rates() -> list[dict]:
    """Ticks/s through the bot with live scoring off and on, for two opening rates."""
    import boto3
    import pymongo

    from bench.bench_streamer import local_services, sim_ticks
    from bench.planted_data import write_channels
    from pipelines.local.algorithms.linear_learner import train
    from pipelines.local.endpoint import EndpointServer, StaticResolver
    from streamer.bot import Bot
    from streamer.scoring import LiveScorer, ScoringSettings
    from streamer.store import Store
    from streamer.trading import BotSettings

    ticks = sim_ticks(SCORED_TICKS)
    rows = []
    with tempfile.TemporaryDirectory() as work, local_services(Path(work)) as (mongo_uri, _, s3):
        train({"predictor_type": "binary_classifier", "epochs": "2", "num_models": "1"},
              write_channels(Path(work) / "data", rows=1500), Path(work) / "model", log=lambda _: None)
        client = pymongo.MongoClient(mongo_uri)
        with EndpointServer(StaticResolver({"livetrain": str(Path(work) / "model" / "model.tar.gz")})) as server:
            runtime = boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1")
            for open_every in (30.0, 0.0):
                rates = {}
                for scoring in (False, True):
                    scorer = LiveScorer(ScoringSettings("livetrain", "livetrain-data", "livetrain"), runtime,
                                        s3) if scoring else None
                    store = Store(client[f"bench_scoring_{int(open_every)}_{int(scoring)}"], "EPIC")
                    bot = Bot(store, BotSettings(open_every_s=open_every), warmup_s=0, scorer=scorer)
                    start = time.perf_counter()
                    for tick in ticks:
                        bot.on_tick(tick)
                        if store.flush_due():
                            store.flush()
                    store.flush()
                    rates[scoring] = len(ticks) / (time.perf_counter() - start)
                    if scorer:
                        scorer.close()
                        status = scorer.status()
                rows.append({"trades opened": f"every {open_every:g} s" if open_every else "every tick",
                             "ticks/s scoring off": f"{rates[False]:,.0f}", "ticks/s scoring on": f"{rates[True]:,.0f}",
                             "on / off": f"{rates[True] / rates[False]:.2f}", "live scoring": status})
        client.close()
    return rows


def main() -> None:
    seeds = int(os.environ.get("BENCH_BACKTEST_SEEDS", SEEDS))
    batches = int(os.environ.get("BENCH_BACKTEST_BATCHES", BATCHES))
    RESULTS.mkdir(exist_ok=True)
    reports = {}
    for market in MARKETS:
        reports[market] = []
        for seed in range(seeds):
            report = run(market, seed, batches)
            reports[market].append(report)
            print(f"  {market}, seed {seed}: lift retrain {mean_lift(report, 'retrain'):+.3f}, frozen "
                  f"{mean_lift(report, 'frozen'):+.3f}; P&L " + ", ".join(
                      f"{p} {v:,.0f}" for p, v in report["total_pnl"].items()), flush=True)
    (RESULTS / "backtest.json").write_text(json.dumps(reports, indent=1) + "\n")
    print(table(summary(reports)))
    if "regime-switching" in reports:
        print(table([detection(reports["regime-switching"])]))
    plot(reports, RESULTS / "backtest.png")
    print(f"reports in {RESULTS / 'backtest.json'}, plot in {RESULTS / 'backtest.png'}")
    print(table(scoring_rates()))
