"""The quality gate over many seeds: how often noise registers, how often a real signal does, and interval coverage.

Each run is the product's pipeline with its DEFAULT parameters, executed by the local engine against moto, on a
fresh synthetic batch (10,000 trades; seeds 0 … SEEDS−1 of each cell, none chosen):

- random walk, one trade per 30 s: nothing is predictable; the goal is that at most 5 % register;
- random walk, a trade on every tick: the same, with trades that share one price path (the batch covers
  under 3 h of market time, so the answer should be "not enough market time");
- most trades win (random walk, take-profit 20 points, stop-loss 300): a model that flags every trade has
  precision ≈ the base rate ≈ 0.8; it must not register;
- planted signal, one trade per 30 s: a real, learnable pattern; the goal is that at least 80 % register;
- a challenger worse than the champion: a model registered and approved on a planted-signal batch serves;
  each challenger's batch holds the opposite pattern (reversal) until its test slice, where momentum returns,
  so it learned the wrong thing; it must not replace the champion.

Coverage of the 95 % intervals: on a random walk the true lift of any model is 0, so each run's lift
interval should contain 0; on the planted signal, each run's registered-or-not best model is scored on a
large independent batch of the same market (40,000 trades), whose precision, lift and precision at the
target recall stand in for the true values. Goal: 90-98 %.

Rates are given with Wilson 95 % intervals (statsmodels). Results go to bench/results/gate.json and a plot to
bench/results/gate.png. `python -m bench bench_gate` (BENCH_GATE_SEEDS, default 20): about 8 min on 2 cores.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.measure import table

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = RESULTS / "batches"
SEEDS = 20
TRADES = 10_000
POPULATION_TRADES = 40_000
POPULATION_SEED = 1_000_000  # far from every cell's seeds
CHAMPION_SEED = 2_000_000  # the champion: the first of these planted-signal batches whose model registers
BUCKET, GROUP, PIPELINE = "bench-gate", "bench-gate-models", "bench-gate"
ROLE = "arn:aws:iam::123456789012:role/bench-gate"
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


@dataclass(frozen=True)
class Cell:
    name: str
    market: str
    bot: tuple[tuple[str, float], ...] = ()  # BotSettings fields that differ from the default
    signal_changes: tuple[tuple[float, float], ...] = ()
    goal: str = "never registers"
    champion: bool = False  # an approved model serves while the cell runs


# 10,000 trades 30 s apart: the test slice starts about 74 h after the first tick
REVERSAL_UNTIL_THE_TEST_SLICE = ((0.0, -0.25), (75.0, 0.5))
CELLS = (
    Cell("random walk, 1 trade / 30 s", "random-walk"),
    Cell("random walk, a trade every tick", "random-walk", (("open_every_s", 0.0),)),
    Cell("most trades win (TP 20, SL 300)", "random-walk", (("limit_distance", 20.0), ("stop_distance", 300.0))),
    Cell("planted signal, 1 trade / 30 s", "planted-signal", goal="registers"),
    Cell("worse than the champion", "planted-signal", signal_changes=REVERSAL_UNTIL_THE_TEST_SLICE, champion=True),
)


def batch(cell: Cell, seed: int, trades: int = TRADES) -> Path:
    """A cached synthetic batch directory for this cell and seed."""
    from processing.batch_contract import SCHEMA_VERSION, render_batch, write_batch_dir
    from streamer.market import MarketSettings
    from streamer.synth import synthesize
    from streamer.trading import BotSettings

    tag = "-".join(map(str, [cell.market, *(v for _, v in cell.bot), *(v for c in cell.signal_changes for v in c),
                             seed, trades, f"v{SCHEMA_VERSION}"]))
    directory = BATCHES / tag
    if not (directory / "batch.manifest").exists():
        bot = BotSettings(**dict(cell.bot))
        prices, trades_frame = synthesize(trades, seed, MarketSettings(market=cell.market,
                                                                       signal_changes=cell.signal_changes),
                                          bot, "CS.D.BITCOIN.CFD.IP", progress=None)
        write_batch_dir(render_batch(bucket=BUCKET, epic="CS.D.BITCOIN.CFD.IP", batch_id=tag, prices=prices,
                                     trades=trades_frame, bot_settings=bot.as_dict()), directory)
    return directory


def _batch(job: tuple) -> Path:
    return batch(*job)


class Stack:
    """moto in-process, the pipeline upserted into it with its default parameters."""

    def __enter__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.s3, self.sagemaker = self.client("s3"), self.client("sagemaker")
        self.s3.create_bucket(Bucket=BUCKET)
        from pipelines.driver import PipelineSettings, upsert_pipeline

        settings = PipelineSettings(region="us-east-1", role_arn=ROLE, bucket=BUCKET, pipeline_name=PIPELINE,
                                    model_package_group=GROUP, prefix=PIPELINE)
        self.pipeline_arn, _ = upsert_pipeline(self.s3, self.sagemaker, settings)
        self.state = Path(tempfile.mkdtemp(prefix="bench-gate-"))
        return self

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.url, **CREDENTIALS)

    def __exit__(self, *exc):
        self.server.stop()

    def approve_a_champion(self, cell: Cell) -> None:
        """Register a model on a fresh batch of `cell` and approve it, as a reviewer would."""
        for seed in range(CHAMPION_SEED, CHAMPION_SEED + 3):
            record = self.run(batch(cell, seed))
            if record["PipelineExecutionStatus"] == "Succeeded":
                arn = record["Steps"]["RegisterBestModel"]["Properties"]["ModelPackageArn"]
                self.sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
                print(f"  the champion: {arn} (planted signal, seed {seed})", flush=True)
                return
        raise RuntimeError("no champion registered in 3 planted-signal batches")

    def run(self, batch_dir: Path) -> dict:
        from pipelines.local.engine import LocalExecution, fetch_definition
        from pipelines.parameters import resolve_parameters, with_batch_epic
        from processing.batch_contract import upload_batch_dir

        key = upload_batch_dir(self.s3, BUCKET, batch_dir)
        definition, arn = fetch_definition(self.sagemaker, PIPELINE)
        parameters = resolve_parameters(definition, with_batch_epic(definition, {"InputManifestKey": key}))
        execution = LocalExecution(definition, parameters,
                                   s3=self.s3, sagemaker=self.sagemaker, state_dir=self.state,
                                   pipeline_name=PIPELINE, pipeline_arn=arn, progress=lambda line: None)
        return execution.run()


def outcome(record: dict) -> dict:
    """What one run decided, and the evaluation's numbers when it got that far."""
    steps = record["Steps"]
    failed = next((n for n, s in steps.items() if s["StepStatus"] == "Failed"), None)
    result = {"status": record["PipelineExecutionStatus"], "stopped_at": failed,
              "reason": (record["FailureReason"] or "")[:300]}
    evaluation = (steps.get("EvaluateBestModel", {}).get("Properties") or {}).get("PropertyFiles", {})
    evaluation = evaluation.get("EvaluationReport")
    if evaluation:
        metrics = evaluation["binary_classification_metrics"]
        result.update({name: metrics[name] for name in ("precision", "recall", "auc")})
        result.update(lift=evaluation["lift"], base_rate=evaluation["base_rate"],
                      precision_at_target_recall=evaluation["precision_at_target_recall"],
                      vs_baseline=evaluation["vs_baseline"]["difference"],
                      vs_champion=evaluation["vs_champion"]["difference"])
        model = steps["BestModel"]["Properties"]["PrimaryContainer"]["ModelDataUrl"]
        result["model_data_url"] = model
    return result


def population(stack: Stack, model_data_url: str, features: np.ndarray, labels: np.ndarray) -> dict:
    """The model's precision, lift and precision at the target recall on a large independent sample."""
    from pipelines.local.endpoint import load_model_data
    from processing.evaluate import MODEL_METRICS, model_metrics, score_groups

    model = load_model_data(model_data_url, stack.s3)
    scores, predicted = model.predict(features)
    values = dict(zip(MODEL_METRICS, model_metrics(labels, score_groups(scores), predicted.astype(np.int64), 0.25),
                      strict=True))
    return {name: float(values[name]) for name in ("precision", "lift", "precision_at_target_recall")}


def population_sample(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every trade of a batch (no split: it only scores fixed models)."""
    from processing import batch_contract as contract
    from processing.preprocess import trade_features

    read = contract.read_batch(directory)
    features, keep = trade_features(read)
    return features, read.trades["label"][keep].astype(np.int64)


def wilson(successes: int, total: int) -> str:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, total, alpha=0.05, method="wilson")
    return f"{successes}/{total} = {100 * successes / total:.0f} % [{100 * low:.0f}, {100 * high:.0f}]"


def covered(entry: dict, truth: float) -> bool:
    return entry["lower"] <= truth <= entry["upper"]


def main(seeds: int | None = None) -> None:
    seeds = seeds or int(os.environ.get("BENCH_GATE_SEEDS", SEEDS))
    RESULTS.mkdir(exist_ok=True)
    print(f"synthesising {len(CELLS)} cells × {seeds} batches of {TRADES:,} trades (cached in {BATCHES})…",
          flush=True)
    planted = next(cell for cell in CELLS if cell.goal == "registers")
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_batch, [(cell, seed) for cell in CELLS for seed in range(seeds)]
                      + [(planted, POPULATION_SEED, POPULATION_TRADES)]
                      + [(planted, CHAMPION_SEED + i) for i in range(3)]))
    features, labels = population_sample(batch(planted, POPULATION_SEED, POPULATION_TRADES))
    runs = []
    with Stack() as stack:
        for cell in CELLS:
            if cell.champion:
                stack.approve_a_champion(planted)
            for seed in range(seeds):
                result = {"cell": cell.name, "seed": seed, **outcome(stack.run(batch(cell, seed)))}
                if cell.goal == "registers" and "model_data_url" in result:
                    result["population"] = population(stack, result["model_data_url"], features, labels)
                runs.append(result)
                print(f"  {cell.name}, seed {seed}: {result['status']}"
                      f"{'' if result['status'] == 'Succeeded' else ' at ' + str(result['stopped_at'])}", flush=True)
    (RESULTS / "gate.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(report(runs))
    plot(runs, RESULTS / "gate.png")
    print(f"runs in {RESULTS / 'gate.json'}, plot in {RESULTS / 'gate.png'}")


def report(runs: list[dict]) -> str:
    rows = []
    for cell in CELLS:
        mine = [r for r in runs if r["cell"] == cell.name]
        registered = sum(r["status"] == "Succeeded" for r in mine)
        stops = {}
        for r in mine:
            stops[r["stopped_at"] or "registered"] = stops.get(r["stopped_at"] or "registered", 0) + 1
        evaluated = [r for r in mine if "lift" in r]
        if cell.market == "random-walk":
            coverage = wilson(sum(covered(r["lift"], 0.0) for r in evaluated), len(evaluated)) if evaluated else "-"
        else:
            checks = [covered(r[name], r["population"][name]) for r in evaluated if "population" in r
                      for name in ("precision", "lift", "precision_at_target_recall")]
            coverage = wilson(sum(checks), len(checks)) if checks else "-"
        recalls = [r["recall"]["value"] for r in evaluated]
        rows.append({"cell": cell.name, "goal": cell.goal, "registered": wilson(registered, len(mine)),
                     "where runs stopped": ", ".join(f"{k} {v}" for k, v in sorted(stops.items())),
                     "95 % interval coverage": coverage,
                     "test recall median [IQR]": (f"{np.median(recalls):.2f} [{np.quantile(recalls, 0.25):.2f}, "
                                                  f"{np.quantile(recalls, 0.75):.2f}]") if recalls else "-"})
    return table(rows)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    evaluated = [r for r in runs if "lift" in r]
    cells = [c.name for c in CELLS if any(r["cell"] == c.name for r in evaluated)]
    if not cells:
        return
    figure, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 4), sharey=True, squeeze=False)
    for axis, name in zip(axes[0], cells, strict=True):
        mine = [r for r in evaluated if r["cell"] == name]
        for i, r in enumerate(mine):
            lift = r["lift"]
            colour = "tab:green" if r["status"] == "Succeeded" else "tab:grey"
            axis.plot([i, i], [lift["lower"], lift["upper"]], color=colour, linewidth=2)
            axis.plot(i, lift["value"], "o", color=colour, markersize=3)
            if "population" in r:
                axis.plot(i, r["population"]["lift"], "x", color="black", markersize=4)
        axis.axhline(0, color="black", linewidth=0.5)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("seed")
    axes[0][0].set_ylabel("lift over base rate, 95 % interval\n(green: registered; x: value on 40k new trades)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
