"""The live-quality monitor: captured predictions merged with ground truth, measured per window and model version.

    python monitor.py --capture-dir C --ground-truth-dir G --output-dir O
                      [--window-hours 24] [--dependence-seconds 1500] [--min-windows 20]

Reads every JSON Lines file below C (SageMaker data capture: `captureData.endpointOutput` and
`eventMetadata.inferenceId`, `inferenceTime`) and below G (Model Monitor's ground truth:
`groundTruthData.data` and `eventMetadata.eventId`, plus `modelVersion` when the streamer knew it), joins
them on inference id = event id (as Model Monitor's merge does), and for each model version and each window of
`--window-hours` of inference time computes live precision, recall, base rate and lift (precision − base rate)
with the pipeline's 95 % circular block bootstrap (evaluate.py; blocks of one dependence span). A window with
fewer than `--min-windows` dependence spans of inferences is "not enough data": it is reported, never judged.

Writes to O:
    live_quality.json          {"windows": [{model_version, start, end, trades, independent_windows, status,
                                 precision, recall, base_rate, lift (each {value, lower, upper})}], ...}
    constraint_violations.json Model Monitor's layout: {"violations": [{metric_name, constraint_check_type,
                                 description}]}: each judged window whose lift's lower bound is below 0
    cloudwatch_metrics.json    PutMetricData entries (namespace livetrain/LiveQuality, dimensions Endpoint and
                                 ModelVersion): LiftLowerBound, Lift, Precision per judged window; and, with the
                                 dimension Endpoint alone, LiftLowerBound of the model in service (the version
                                 with the most trades in the window): what the live-lift alarm watches. A
                                 publisher sends them (processing scripts hold no AWS SDK)

Times are those of the inferences (wall clock, as Model Monitor's): with a simulator running S times faster
than real time, pass a dependence span S times shorter. Bad input → one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

try:  # in the Processing container siblings; in tests and the CLI, package modules
    from evaluate import block_rows, bootstrap
    from script_io import InputError, write_atomically
except ImportError:
    from processing.evaluate import block_rows, bootstrap
    from processing.script_io import InputError, write_atomically

DEFAULT_CAPTURE_DIR = "/opt/ml/processing/input/capture"
DEFAULT_GROUND_TRUTH_DIR = "/opt/ml/processing/input/groundtruth"
DEFAULT_OUTPUT_DIR = "/opt/ml/processing/output"
NAMESPACE = "livetrain/LiveQuality"
NOT_ENOUGH = "not enough data"
SHADOW_SUFFIX = "-shadow"  # model version "<v>-shadow": version v scored on requests another version answered
METRICS = ("precision", "recall", "base_rate", "lift")
QUALITY_FILE = "live_quality.json"
VIOLATIONS_FILE = "constraint_violations.json"
METRICS_FILE = "cloudwatch_metrics.json"
WINDOW_HOURS, DEPENDENCE_SECONDS, MIN_WINDOWS = 24.0, 1500.0, 20.0  # the defaults (also the pipeline's parameters')


def records(directory: Path):
    """Every JSON line of every .jsonl file below `directory`, in path order."""
    for path in sorted(Path(directory).rglob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise InputError(f"{path}: line {number}: not JSON") from None


def read_captures(directory: Path) -> dict[str, tuple[float, float, int]]:
    """{inference id: (inference time in epoch seconds, score, predicted label)}; records without an id skipped."""
    captured = {}
    for record in records(directory):
        metadata = record.get("eventMetadata", {})
        output = record.get("captureData", {}).get("endpointOutput")
        if not metadata.get("inferenceId") or not output:
            continue
        data = output["data"] if output.get("encoding") != "BASE64" else base64.b64decode(output["data"]).decode()
        prediction = json.loads(data)["predictions"][0]
        when = datetime.strptime(metadata["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        captured[metadata["inferenceId"]] = (when, float(prediction["score"]), int(prediction["predicted_label"]))
    return captured


def read_ground_truth(directory: Path) -> dict[str, tuple[int, str]]:
    """{event id: (label, model version or "unknown")}."""
    truth = {}
    for record in records(directory):
        metadata = record.get("eventMetadata", {})
        truth[metadata["eventId"]] = (int(float(record["groundTruthData"]["data"])),
                                      str(metadata.get("modelVersion") or "unknown"))
    return truth


def _entry(value: float, interval) -> dict:
    return {"value": float(value), "lower": float(interval[1]), "upper": float(interval[2])}


def measure(times: np.ndarray, scores: np.ndarray, predicted: np.ndarray, labels: np.ndarray,
            dependence_seconds: float, min_windows: float) -> dict:
    """One window's metrics with intervals, or its status alone when it holds too little market time."""
    order = np.argsort(times, kind="stable")
    times, scores, predicted, labels = times[order], scores[order], predicted[order], labels[order]
    independent = float(times[-1] - times[0]) / dependence_seconds if len(times) > 1 else 0.0
    result = {"trades": len(labels), "independent_windows": round(independent, 1)}
    if independent < min_windows or labels.min() == labels.max():
        return {**result, "status": NOT_ENOUGH}
    block = block_rows((times * 1000).astype(np.int64), dependence_seconds)
    values, intervals = bootstrap(labels, {"live": (scores, predicted)}, 0.25, block)
    result.update({name: _entry(values[f"live.{name}"], intervals[f"live.{name}"])
                   for name in ("precision", "recall", "lift")})
    result["base_rate"] = _entry(values["base_rate"], intervals["base_rate"])
    result["status"] = "declining" if result["lift"]["lower"] < 0 else "healthy"
    return result


def in_service(windows: list[dict]) -> list[dict]:
    """Per window start, the window of the version that scored the most trades in it: the model in service (shadow
    figures never are)."""
    best = {}
    for window in (w for w in windows if not w["model_version"].endswith(SHADOW_SUFFIX)):
        if window["start"] not in best or window["trades"] > best[window["start"]]["trades"]:
            best[window["start"]] = window
    return [best[start] for start in sorted(best)]


def _metric(name: str, value: float, window: dict, endpoint: str, version: str | None = None) -> dict:
    """A PutMetricData entry, stamped at the window's last inference (CloudWatch refuses stamps in the future)."""
    dimensions = [{"Name": "Endpoint", "Value": endpoint}]
    if version is not None:
        dimensions.append({"Name": "ModelVersion", "Value": version})
    return {"MetricName": name, "Timestamp": window["last_inference"], "Value": value, "Unit": "None",
            "Dimensions": dimensions}


def monitor(captured: dict, truth: dict, window_hours: float, dependence_seconds: float, min_windows: float,
            endpoint: str = "livetrain") -> dict:
    """live_quality.json's content, with the violations and metrics files' content under their names."""
    merged = [(version, *captured[i], label) for i, (label, version) in truth.items() if i in captured]
    windows = []
    width = window_hours * 3600
    for version in sorted({row[0] for row in merged}):
        rows = np.array([row[1:] for row in merged if row[0] == version], dtype=np.float64)
        index = np.floor(rows[:, 0] / width)
        for window in np.unique(index):
            part = rows[index == window]
            start = datetime.fromtimestamp(window * width, UTC)
            end = datetime.fromtimestamp((window + 1) * width, UTC)
            last = datetime.fromtimestamp(part[:, 0].max(), UTC)
            windows.append({"model_version": version, "start": start.isoformat(), "end": end.isoformat(),
                            "last_inference": last.isoformat(),
                            **measure(part[:, 0], part[:, 1], part[:, 2].astype(np.int64),
                                      part[:, 3].astype(np.int64), dependence_seconds, min_windows)})
    violations = [{"metric_name": "lift", "constraint_check_type": "LessThanThreshold",
                   "description": f"model version {w['model_version']}, window {w['start']}: the lower bound of live "
                                  f"lift {w['lift']['lower']:.3f} is below 0 (lift {w['lift']['value']:.3f})"}
                  for w in windows if w["status"] == "declining"]
    judged = [w for w in windows if w["status"] != NOT_ENOUGH]
    metrics = [_metric(name, value, w, endpoint, w["model_version"]) for w in judged
               for name, value in (("LiftLowerBound", w["lift"]["lower"]), ("Lift", w["lift"]["value"]),
                                   ("Precision", w["precision"]["value"]))]
    metrics += [_metric("LiftLowerBound", w["lift"]["lower"], w, endpoint) for w in in_service(judged)]
    return {"windows": windows, "merged": len(merged), "captured": len(captured), "ground_truth": len(truth),
            "window_hours": window_hours, "dependence_seconds": dependence_seconds, "min_windows": min_windows,
            VIOLATIONS_FILE: {"violations": violations},
            METRICS_FILE: {"Namespace": NAMESPACE, "MetricData": metrics}}


def run(capture_dir, ground_truth_dir, output_dir, window_hours=24.0, dependence_seconds=1500.0, min_windows=20.0,
        endpoint="livetrain") -> dict:
    report = monitor(read_captures(Path(capture_dir)), read_ground_truth(Path(ground_truth_dir)), window_hours,
                     dependence_seconds, min_windows, endpoint)
    for name in (VIOLATIONS_FILE, METRICS_FILE):
        content = report.pop(name)
        write_atomically(output_dir, name, lambda out, c=content: out.write(json.dumps(c, indent=1) + "\n"))
        report[name] = content
    quality = {k: v for k, v in report.items() if not k.endswith(".json")}
    write_atomically(output_dir, QUALITY_FILE, lambda out: out.write(json.dumps(quality, indent=1) + "\n"))
    return report


def _positive(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture-dir", default=DEFAULT_CAPTURE_DIR)
    parser.add_argument("--ground-truth-dir", default=DEFAULT_GROUND_TRUTH_DIR)
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--window-hours", type=_positive, default=WINDOW_HOURS)
    parser.add_argument("--dependence-seconds", type=_positive, default=DEPENDENCE_SECONDS)
    parser.add_argument("--min-windows", type=_positive, default=MIN_WINDOWS)
    parser.add_argument("--endpoint", default="livetrain", help="the Endpoint dimension of the metrics")
    args = parser.parse_args(argv)
    try:
        report = run(args.capture_dir, args.ground_truth_dir, args.output_dir, args.window_hours,
                     args.dependence_seconds, args.min_windows, args.endpoint)
    except (InputError, OSError, KeyError, TypeError, ValueError) as exc:
        print(f"monitor: error: {exc}", file=sys.stderr)
        return 1
    judged = [w for w in report["windows"] if w["status"] != NOT_ENOUGH]
    print(f"monitor: {report['merged']:,} scored trades with ground truth in {len(report['windows'])} windows "
          f"({len(judged)} judged); {len(report[VIOLATIONS_FILE]['violations'])} violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
