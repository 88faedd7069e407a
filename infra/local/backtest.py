"""`livetrain backtest`: does freshness pay? K consecutive batches through the real pipeline, three policies
scored on each next batch's trades.

Each batch but the last runs the product's pipeline (its definition upserted into a local moto, executed by the
local engine, with the gate and the champion comparison as on AWS); a package the gate registers is approved at
once, as a reviewer who trusts the gate would. Then, on the next batch's trades, before any of them trains:

- `retrain`: the latest approved package (the one a live endpoint would serve after each run);
- `frozen`: the first approved package, kept for ever;
- `none`: no model; the bot takes every trade (precision = the base rate, lift 0).

Until a package is approved, `retrain` and `frozen` have no model and trade as `none` does. A policy's trades are
the ones its model flags (predicted label 1); its P&L is the sum of their `pnl` (price points). Precision, lift
(precision − base rate) and P&L carry 95 % intervals from the pipeline's own circular block bootstrap
(processing/evaluate.py: blocks of one dependence span of market time, every policy resampled on the same rows).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infra.local.services import local_client, start_moto
from livetrain.config import LOCAL_ACCOUNT_ID, Config
from livetrain.errors import UserError

POLICIES = ("retrain", "frozen", "none")
METRICS = ("precision", "lift", "pnl")
ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:role/livetrain-backtest"
TARGET_RECALL = 0.25  # the pipeline's default TargetRecall (the bootstrap computes every metric; this reports two)


@dataclass(frozen=True)
class BacktestSettings:
    """Where the batches come from (a directory of batches, or the simulator), the tuning budget, the outputs."""

    config: Config
    out_dir: Path  # the run's moto state, synthesised batches and plot
    batches_dir: Path | None = None
    market: str | None = None
    batches: int = 6
    seed: int = 0
    batch_size: int = 10_000
    bot: dict = field(default_factory=dict)  # BotSettings fields for synthesised batches
    max_jobs: int = 4
    max_parallel_jobs: int = 2
    json_path: Path | None = None
    log: object = None  # a function of one line; default: stderr


# ---------------------------------------------------------------- the batches


def batch_dirs(directory: Path) -> list[Path]:
    """The batch directories in `directory`, in name order; UserError unless there are at least two."""
    from processing.batch_contract import MANIFEST_FILE

    if not directory.is_dir():
        raise UserError(f"--batches-dir {directory}: not a directory; pass a folder of batch directories")
    found = sorted(d for d in directory.iterdir() if (d / MANIFEST_FILE).is_file())
    if len(found) < 2:
        raise UserError(f"--batches-dir {directory}: {len(found)} batch directories (with {MANIFEST_FILE}); a "
                        "backtest trains on one batch and scores the next, so it needs at least two")
    return found


def synthesize_batches(directory: Path, settings: BacktestSettings) -> list[Path]:
    """K consecutive batches of one simulated market: the first K×N trades by open time, N per batch, each with
    the prices from LOOKBACK_SECONDS before its first open to its last close."""
    from processing.batch_contract import LOOKBACK_SECONDS, render_batch, write_batch_dir
    from streamer.market import MarketSettings
    from streamer.synth import synthesize
    from streamer.trading import BotSettings

    bot, epic, n = BotSettings(**settings.bot), settings.config.epic, settings.batch_size
    prices, trades = synthesize(settings.batches * n, settings.seed, MarketSettings(market=settings.market), bot,
                                epic, progress=sys.stderr)
    ts = prices["ts"].to_numpy()
    paths = []
    for index in range(settings.batches):
        part = trades.iloc[index * n:(index + 1) * n]
        first = np.searchsorted(ts, part["open_ts"].min() - 1000 * LOOKBACK_SECONDS, side="right") - 1
        last = np.searchsorted(ts, part["close_ts"].max(), side="right")
        batch_id = f"{settings.market}-seed{settings.seed}-{index:03d}"
        files = render_batch(bucket=settings.config.bucket, epic=epic, batch_id=batch_id,
                             prices=prices.iloc[max(first, 0):last], trades=part, bot_settings=bot.as_dict())
        paths.append(write_batch_dir(files, directory / batch_id))
    return paths


# ---------------------------------------------------------------- scoring the policies


def _interval(value: float, interval: tuple[float, float, float]) -> dict:
    return {"value": float(value), "lower": float(interval[1]), "upper": float(interval[2])}


def score_policies(trades: dict[str, np.ndarray], predictions: dict[str, tuple[np.ndarray, np.ndarray]],
                   dependence_seconds: float) -> dict[str, dict]:
    """{policy: {"precision", "lift", "pnl": {"value", "lower", "upper"}, "trades_taken"}} on one batch's trades.

    `trades` has label, pnl and open_ms (in open order); `predictions` maps each policy to (scores, predicted).
    """
    from arch.bootstrap import CircularBlockBootstrap

    from processing.evaluate import BOOTSTRAP_SEED, LEVEL, REPLICATES, block_rows, bootstrap

    labels, pnl = trades["label"], trades["pnl"]
    block = block_rows(trades["open_ms"], dependence_seconds)
    values, intervals = bootstrap(labels, predictions, TARGET_RECALL, block)
    taken = [predicted for _, predicted in predictions.values()]

    def pnl_of(pnl, *taken):
        return np.array([float(np.sum(pnl * flags)) for flags in taken])

    resampler = CircularBlockBootstrap(block, pnl, *taken, seed=BOOTSTRAP_SEED)
    bounds = resampler.conf_int(pnl_of, reps=REPLICATES, method="percentile", size=LEVEL)
    pnl_values = pnl_of(pnl, *taken)
    scored = {}
    for i, name in enumerate(predictions):
        scored[name] = {metric: _interval(values[f"{name}.{metric}"], intervals[f"{name}.{metric}"])
                        for metric in ("precision", "lift")}
        scored[name]["pnl"] = {"value": float(pnl_values[i]), "lower": float(bounds[0, i]),
                               "upper": float(bounds[1, i])}
        scored[name]["trades_taken"] = int(taken[i].sum())
    return scored


def batch_trades(directory: Path) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """(features, {label, pnl, open_ms}, dependence seconds) of a batch's trades with full look-back."""
    from processing.batch_contract import LOOKBACK_SECONDS, read_batch
    from processing.preprocess import trade_features

    batch = read_batch(directory)
    features, keep = trade_features(batch)
    trades = {"label": batch.trades["label"][keep].astype(np.int64), "pnl": batch.trades["pnl"][keep],
              "open_ms": batch.trades["open_ts"][keep]}
    lifetime_ms = float(np.max(batch.trades["close_ts"] - batch.trades["open_ts"]))
    return features, trades, LOOKBACK_SECONDS + lifetime_ms / 1000


# ---------------------------------------------------------------- the run


class _Pipeline:
    """moto on loopback with the product's pipeline upserted; runs a batch, approves what the gate registers."""

    def __init__(self, settings: BacktestSettings, state_dir: Path):
        from pipelines.driver import PipelineSettings, upsert_pipeline

        self.config, self.state_dir, self.log = settings.config, state_dir, settings.log
        self.moto = start_moto(state_dir)
        self.s3 = local_client("s3", self.moto.url, self.config.region)
        self.sagemaker = local_client("sagemaker", self.moto.url, self.config.region)
        try:
            self.s3.create_bucket(Bucket=self.config.bucket)
            upsert_pipeline(self.s3, self.sagemaker, PipelineSettings(
                region=self.config.region, role_arn=ROLE_ARN, bucket=self.config.bucket,
                pipeline_name=self.config.pipeline_name, model_package_group=self.config.model_package_group,
                prefix=self.config.pipeline_name, max_jobs=settings.max_jobs,
                max_parallel_jobs=settings.max_parallel_jobs), self.config.cache_dir, progress=lambda line: None)
        except BaseException:  # no orphan server
            self.moto.stop()
            raise

    def run(self, batch_dir: Path) -> dict:
        """{"batch_id", "status", "reason", "package"}: the run on this batch; a registered package is approved."""
        from pipelines.local.engine import LocalExecution, fetch_definition
        from pipelines.parameters import resolve_parameters, with_batch_epic
        from processing.batch_contract import upload_batch_dir

        key = upload_batch_dir(self.s3, self.config.bucket, batch_dir)
        definition, arn = fetch_definition(self.sagemaker, self.config.pipeline_name)
        parameters = resolve_parameters(definition, with_batch_epic(definition, {"InputManifestKey": key}))
        execution = LocalExecution(definition, parameters,
                                   s3=self.s3, sagemaker=self.sagemaker, state_dir=self.state_dir,
                                   pipeline_name=self.config.pipeline_name, pipeline_arn=arn,
                                   progress=lambda line: None)
        record = execution.run()
        package = None
        if record["PipelineExecutionStatus"] == "Succeeded":
            package = record["Steps"]["RegisterBestModel"]["Properties"]["ModelPackageArn"]
            self.sagemaker.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
        return {"batch_id": batch_dir.name, "execution": execution.id, "status": record["PipelineExecutionStatus"],
                "reason": record["FailureReason"] or "", "package": package}

    def model(self, package_arn: str):
        from pipelines.local.endpoint import load_model_data

        container = self.sagemaker.describe_model_package(ModelPackageName=package_arn)
        url = container["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        return load_model_data(url, self.s3)

    def stop(self) -> None:
        self.moto.stop()


def run_backtest(settings: BacktestSettings) -> dict:
    """Run the backtest; returns (and writes to settings.json_path) the report, and prints its table."""
    log = settings.log or (lambda line: print(line, file=sys.stderr, flush=True))
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    if settings.batches_dir:
        batches = batch_dirs(settings.batches_dir)
    else:
        log(f"simulating {settings.batches} batches of {settings.batch_size:,} trades ({settings.market}, "
            f"seed {settings.seed})…")
        batches = synthesize_batches(settings.out_dir / "batches", settings)
    pipeline = _Pipeline(settings, Path(tempfile.mkdtemp(prefix="state-", dir=settings.out_dir)))
    report = {"market": settings.market, "seed": settings.seed if settings.market else None,
              "batches": [b.name for b in batches], "runs": [], "scored_batches": [],
              **{policy: [] for policy in POLICIES}}
    serving = {"retrain": None, "frozen": None}
    models = {}
    try:
        for index, batch in enumerate(batches):
            if index:
                features, trades, dependence = batch_trades(batch)
                predictions = {}
                for policy in POLICIES:
                    arn = serving.get(policy)
                    if arn is None:  # no model: every trade is taken, and every score is equal
                        predictions[policy] = (np.zeros(len(features)), np.ones(len(features), np.int64))
                    else:
                        models.setdefault(arn, pipeline.model(arn))
                        predictions[policy] = models[arn].predict(features)
                scored = score_policies(trades, predictions, dependence)
                report["scored_batches"].append({"batch_id": batch.name, "trades": len(trades["label"]),
                                                 "first_open_ms": int(trades["open_ms"][0]),
                                                 "last_open_ms": int(trades["open_ms"][-1])})
                for policy in POLICIES:
                    report[policy].append({"batch_id": batch.name, "model": serving.get(policy),
                                           **scored[policy]})
                log(f"{batch.name}: " + "; ".join(
                    f"{p} lift {_text(scored[p]['lift'])}, P&L {scored[p]['pnl']['value']:,.0f}" for p in POLICIES))
            if index == len(batches) - 1:
                break
            run = pipeline.run(batch)
            report["runs"].append(run)
            log(f"{batch.name}: pipeline {run['status']}"
                + (f", approved {run['package']}" if run["package"] else f": {run['reason'][:160]}"))
            if run["package"]:
                serving["retrain"] = run["package"]
                serving["frozen"] = serving["frozen"] or run["package"]
    finally:
        pipeline.stop()
    report["total_pnl"] = {policy: float(sum(entry["pnl"]["value"] for entry in report[policy]))
                           for policy in POLICIES}
    report["interval"] = {"level": 0.95, "bootstrap": "circular block bootstrap over one dependence span, paired "
                                                      "across policies (processing/evaluate.py)"}
    if not any(run["package"] for run in report["runs"]):
        report["note"] = "not enough data: no run registered a package, so every policy traded without a model"
    if settings.json_path:
        from livetrain.files import write_text_atomically

        write_text_atomically(settings.json_path, json.dumps(report, indent=1) + "\n")
    return report


def _text(entry: dict) -> str:
    from processing.evaluate import rounded

    return rounded(entry)


def table(report: dict) -> str:
    """One row per scored batch and policy, then the totals."""
    rows = [["BATCH", "POLICY", "MODEL", "TRADES TAKEN", "PRECISION", "LIFT", "P&L"]]
    for position in range(len(report["none"])):
        for policy in POLICIES:
            entry = report[policy][position]
            model = f"v{entry['model'].rsplit('/', 1)[-1]}" if entry["model"] else "-"
            rows.append([entry["batch_id"] if policy == "retrain" else "", policy, model,
                         f"{entry['trades_taken']:,}", _text(entry["precision"]), _text(entry["lift"]),
                         _text(entry["pnl"])])
    rows.append(["total", "", "", "", "", "", " / ".join(f"{p} {report['total_pnl'][p]:,.0f}" for p in POLICIES)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines + ([report["note"]] if "note" in report else []))


def plot(report: dict, path: Path) -> Path:
    """Precision and lift per scored batch with their intervals, and the cumulative P&L, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"retrain": "tab:green", "frozen": "tab:blue", "none": "tab:grey"}
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    batches = np.arange(1, len(report["none"]) + 1)
    for offset, policy in zip((-0.12, 0.0, 0.12), POLICIES, strict=True):
        entries = report[policy]
        for axis, metric in zip(axes[:2], ("precision", "lift"), strict=True):
            values = np.array([[e[metric]["value"], e[metric]["lower"], e[metric]["upper"]] for e in entries])
            if len(values):
                axis.errorbar(batches + offset, values[:, 0], yerr=[values[:, 0] - values[:, 1],
                                                                    values[:, 2] - values[:, 0]],
                              fmt="o", color=colours[policy], label=policy, capsize=2)
        axes[2].plot(batches, np.cumsum([e["pnl"]["value"] for e in entries]), "o-", color=colours[policy],
                     label=policy)
    axes[1].axhline(0, color="black", linewidth=0.5)
    axes[2].axhline(0, color="black", linewidth=0.5)
    for axis, title in zip(axes, ("precision of the trades taken (95 %)", "lift over the base rate (95 %)",
                                  "cumulative P&L of the trades taken (points)"), strict=True):
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("scored batch")
        axis.set_xticks(batches)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"backtest: {report['market'] or 'batches from a directory'}"
                    + (f", seed {report['seed']}" if report["market"] else ""), fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
