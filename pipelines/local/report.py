"""`livetrain report EXECUTION`: an HTML page with PNG plots of one local execution, from its record alone.

- the DAG, each step coloured by status with its duration;
- the tuning objective of each training job in launch order (the seed's CloudWatch view);
- the verdict: the challenger beside the base rate, the baseline and the champion, each metric with its 95 %
  interval (a plot and a table from evaluation.json), and the confusion matrix at the model's threshold;
- given the live-quality monitor's latest live_quality.json and the act-on-alarm Lambda's records: live lift per
  window and model version with its interval, and what each live-lift alarm did (retrain, roll back, and why).
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from livetrain.errors import UserError
from pipelines.local.records import StepStatus, step_duration

STATUS_COLOURS = {StepStatus.SUCCEEDED: "#b7e4c7", StepStatus.FAILED: "#f4a6a6", StepStatus.NOT_EXECUTED: "#e5e5e5",
                  StepStatus.EXECUTING: "#ffe8a3", StepStatus.PENDING: "#ffffff"}
MODELS = {"challenger": "#1f77b4", "baseline": "#7f7f7f", "champion": "#d62728"}
COMPARED_METRICS = {"precision": "precision at its threshold", "lift": "lift over the base rate",
                    "precision_at_target_recall": "precision at the target recall", "auc": "AUC"}


def render_report(record: dict, out: Path, live_quality: dict | None = None, alarm_actions: tuple = ()) -> Path:
    """Write index.html and its PNGs into `out`; the page's path. UserError when `out` cannot be written."""
    try:
        return _render(record, out, live_quality, alarm_actions)
    except OSError as exc:
        raise UserError(f"cannot write the report to {out} ({exc.strerror or exc}); "
                        "pass --out a directory you can create and write") from None


def _render(record: dict, out: Path, live_quality: dict | None, alarm_actions: tuple) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    sections = [_summary(record)]
    if record["Steps"]:
        plot_dag(record["Steps"], out / "dag.png")
        sections.append(_figure("Steps", "dag.png", "Each step's status and duration; arrows are direct "
                                "dependencies (implied ones omitted)."))
    tuning = _tuning_properties(record)
    if tuning:
        plot_tuning(tuning, out / "tuning.png")
        sections.append(_figure("Tuning", "tuning.png", "The objective of each training job, in launch order."))
    evaluation = _evaluation(record)
    if evaluation:
        plot_verdict(evaluation, out / "verdict.png")
        sections.append(_figure("The challenger beside the base rate, the baseline and the champion", "verdict.png",
                                f"On the held-out test slice; bars are 95 % intervals ({evaluation['summary']})."))
        sections.append(_metrics_table(evaluation))
        plot_confusion(evaluation, out / "confusion.png")
        sections.append(_figure("Confusion matrix on the test slice", "confusion.png",
                                "At the model's own threshold (its predicted_label)."))
    if live_quality and live_quality.get("windows"):
        sections.append(_live_quality(live_quality, out / "live_lift.png"))
    if alarm_actions:
        sections.append("<h2>Actions on the live-lift alarm</h2>" + _table(
            ["alarm state change", "retrain", "roll back", "why"],
            [(a["id"], _action(a.get("retrain")), _action(a.get("rollback")), a["rollback_plan"]["reason"])
             for a in alarm_actions]))
    page = out / "index.html"
    page.write_text(PAGE.format(title=html.escape(f"livetrain execution {record['PipelineExecutionId']}"),
                                body="\n".join(sections)))
    return page


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}
img{{max-width:100%}}</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


def _summary(record: dict) -> str:
    status = record["PipelineExecutionStatus"]
    rows = [("Pipeline", record["PipelineName"]), ("Execution ARN", record["PipelineExecutionArn"]),
            ("Status", status), ("Started", record["StartTime"]), ("Ended", record.get("EndTime") or ""),
            ("Duration", f"{step_duration(record) or 0:.1f} s")]
    if record.get("FailureReason"):
        rows.append(("Failure reason", record["FailureReason"]))
    rows += [(f"Parameter {k}", v) for k, v in record["Parameters"].items()]
    package = next((s["Properties"] for s in record["Steps"].values()
                    if s["StepType"] == "RegisterModel" and s["StepStatus"] == StepStatus.SUCCEEDED), None)
    if package:
        rows += [("Model package", package.get("ModelPackageArn", "")),
                 ("Approval status", package.get("ModelApprovalStatus", ""))]
    return "<h2>Summary</h2>" + _table(None, rows)


def _table(header: list[str] | None, rows: list[tuple]) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _figure(title: str, image: str, caption: str) -> str:
    return f'<h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p><img src="{image}" alt="{html.escape(title)}">'


# ---------------------------------------------------------------- DAG

def _edges(steps: dict) -> list[tuple[str, str]]:
    """Direct dependencies: upstream edges not implied by a longer path."""
    upstream = {name: set(step.get("Upstream", [])) for name, step in steps.items()}

    def ancestors(name: str, seen: set[str]) -> set[str]:
        for parent in upstream[name] - seen:
            seen.add(parent)
            ancestors(parent, seen)
        return seen

    edges = []
    for name, parents in upstream.items():
        implied = set().union(*(ancestors(p, set()) for p in parents)) if parents else set()
        edges += [(parent, name) for parent in sorted(parents - implied)]
    return edges


def _layers(steps: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((level(p) for p in steps[name].get("Upstream", [])), default=-1)
        return depth[name]

    for name in steps:
        level(name)
    return depth


def plot_dag(steps: dict, path) -> None:
    """The DAG as a PNG at `path` (a path or a binary file): one box per step, coloured by its StepStatus, with
    its type and duration; `steps` as in an execution record (StepType, StepStatus, Upstream, Branch, times)."""
    depth = _layers(steps)
    columns: dict[int, list[str]] = {}
    for name in steps:
        columns.setdefault(depth[name], []).append(name)
    height = max(len(c) for c in columns.values())
    position = {name: (d * 2.6, (height - 1) / 2 - i * 1.4) for d, names in columns.items()
                for i, name in enumerate(names)}
    xs = [x for x, _ in position.values()]
    ys = [y for _, y in position.values()]
    width = max(8.0, 2.1 * len(columns))
    figure, axes = plt.subplots(figsize=(width, 0.5 + width * (max(ys) - min(ys) + 1.2) / (max(xs) - min(xs) + 2.4)))
    for parent, child in _edges(steps):
        (x0, y0), (x1, y1) = position[parent], position[child]
        branch = steps[child].get("Branch")
        label = ("if true" if branch[1] else "else") if branch and branch[0] == parent else None
        axes.annotate("", xy=(x1 - 1.05, y1), xytext=(x0 + 1.05, y0),
                      arrowprops={"arrowstyle": "->", "color": "#555", "shrinkA": 0, "shrinkB": 0})
        if label:
            axes.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, label, ha="center", fontsize=8, color="#555")
    for name, (x, y) in position.items():
        step = steps[name]
        status = step["StepStatus"]
        axes.add_patch(FancyBboxPatch((x - 1.05, y - 0.45), 2.1, 0.9, boxstyle="round,pad=0.02",
                                      facecolor=STATUS_COLOURS.get(status, "#fff"), edgecolor="#333"))
        seconds = step_duration(step)
        detail = status if seconds is None else f"{status}, {seconds:.1f} s"
        if step.get("CacheHitResult"):
            detail += " (cache)"
        axes.text(x, y + 0.17, name, ha="center", va="center", fontsize=9, weight="bold")
        axes.text(x, y - 0.05, step["StepType"], ha="center", va="center", fontsize=7.5, color="#444")
        axes.text(x, y - 0.25, detail, ha="center", va="center", fontsize=7.5)
    axes.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    axes.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    axes.set_aspect("equal")
    axes.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------- tuning

def _tuning_properties(record: dict) -> dict | None:
    return next((s["Properties"] for s in record["Steps"].values()
                 if s["StepType"] == "Tuning" and s["StepStatus"] == StepStatus.SUCCEEDED), None)


def plot_tuning(tuning: dict, path) -> None:
    """Each training job's objective in launch order, and the best so far, as a PNG at `path` (or a binary file);
    `tuning` as DescribeHyperParameterTuningJob answers, with the TrainingJobSummaries."""
    jobs = sorted(tuning.get("TrainingJobSummaries", []),  # LaunchOrder: the local tuner's; else creation time
                  key=lambda j: (j.get("LaunchOrder", 0), str(j.get("CreationTime", "")), j["TrainingJobName"]))
    objective = tuning.get("HyperParameterTuningJobConfig", {}).get("HyperParameterTuningJobObjective", {})
    best_name = tuning.get("BestTrainingJob", {}).get("TrainingJobName")
    maximise = objective.get("Type", "Maximize") == "Maximize"
    launch = list(range(1, len(jobs) + 1))
    values = [j.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value") for j in jobs]
    figure, axes = plt.subplots(figsize=(8, 4))
    scored = [(n, v) for n, v in zip(launch, values, strict=True) if v is not None]
    if scored:
        axes.plot(*zip(*scored, strict=True), "o", color="#1f77b4", label="training job")
        running, best_so_far = [], None
        for _, value in scored:
            best_so_far = value if best_so_far is None else (max if maximise else min)(best_so_far, value)
            running.append(best_so_far)
        axes.step([n for n, _ in scored] + [len(jobs) + 0.5], [*running, running[-1]], where="post",
                  color="#ff7f0e", label="best so far")
    for n, job, value in zip(launch, jobs, values, strict=True):
        if job["TrainingJobName"] == best_name and value is not None:
            axes.plot([n], [value], "*", markersize=16, color="#d62728", label="best job")
        if value is None:
            axes.axvline(n, color="#bbb", linestyle=":", label="no metric (failed)")
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), loc="best")
    axes.set_xlabel("training job, in launch order")
    axes.set_ylabel(objective.get("MetricName", "objective"))
    axes.set_xticks(launch)
    axes.set_xlim(0.5, len(jobs) + 0.5)
    axes.set_title(f"{tuning.get('HyperParameterTuningJobName', 'tuning')}: {len(jobs)} training jobs")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------- evaluation

def _evaluation(record: dict) -> dict | None:
    for step in record["Steps"].values():
        files = (step.get("Properties") or {}).get("PropertyFiles", {})
        for content in files.values():
            if isinstance(content, dict) and "binary_classification_metrics" in content:
                return content
    return None


def models_of(evaluation: dict) -> dict[str, dict]:
    """Each scored model's metrics by name: the challenger, and the baseline and champion when present."""
    challenger = {**evaluation["binary_classification_metrics"], "lift": evaluation["lift"],
                  "precision_at_target_recall": evaluation["precision_at_target_recall"]}
    return {"challenger": challenger, **{name: evaluation[name] for name in ("baseline", "champion")
                                         if name in evaluation}}


def plot_verdict(evaluation: dict, path) -> None:
    """The challenger's metrics beside the base rate, the baseline and the champion, with 95 % intervals."""
    models = models_of(evaluation)
    figure, axes_row = plt.subplots(1, len(COMPARED_METRICS), figsize=(3.3 * len(COMPARED_METRICS), 3.2))
    for axes, (metric, title) in zip(axes_row, COMPARED_METRICS.items(), strict=True):
        for row, (name, values) in enumerate(models.items()):
            entry = values[metric]
            if "NaN" in (entry["value"], entry["lower"], entry["upper"]):
                continue
            axes.plot([entry["lower"], entry["upper"]], [row, row], color=MODELS[name], linewidth=3)
            axes.plot(entry["value"], row, "o", color=MODELS[name])
        if metric == "precision":
            axes.axvline(evaluation["base_rate"]["value"], color="black", linestyle=":", label="base rate")
            axes.legend(loc="lower right", fontsize=8)
        if metric == "lift":
            axes.axvline(0, color="black", linewidth=0.8)
        axes.set_yticks(range(len(models)), list(models))
        axes.set_ylim(-0.6, len(models) - 0.4)
        axes.invert_yaxis()
        axes.set_title(title, fontsize=10)
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_confusion(evaluation: dict, path) -> None:
    """The challenger's confusion matrix on the test slice, at its own threshold."""
    matrix = evaluation["binary_classification_metrics"]["confusion_matrix"]
    counts = [[int(matrix[a][p]) for p in ("0", "1")] for a in ("0", "1")]
    total, largest = sum(map(sum, counts)) or 1, max(max(row) for row in counts) or 1
    figure, axes = plt.subplots(figsize=(4.2, 3.9))
    axes.imshow(counts, cmap="Blues", vmin=0, vmax=largest)
    for actual in (0, 1):
        for predicted in (0, 1):
            count = counts[actual][predicted]
            axes.text(predicted, actual, f"{count}\n{count / total:.1%}", ha="center", va="center", fontsize=11,
                      color="white" if count > 0.6 * largest else "black")
    axes.set_xticks([0, 1], ["0 (loss)", "1 (win)"])
    axes.set_yticks([0, 1], ["0 (loss)", "1 (win)"])
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _metrics_table(evaluation: dict) -> str:
    models = models_of(evaluation)
    names = ("precision", "recall", "f1", "accuracy", "auc", "lift", "precision_at_target_recall")
    rows = [(name, *(interval_text(values.get(name)) for values in models.values())) for name in names]
    rows.append(("base rate (share of winning trades)", interval_text(evaluation["base_rate"]), "", ""))
    for other in ("baseline", "champion"):
        comparison = evaluation.get(f"vs_{other}")
        if comparison and comparison.get("present"):
            difference = interval_text(comparison["difference"])
            rows.append((f"challenger − {other}, {comparison['metric']}", difference, "", ""))
        elif comparison:
            rows.append((f"challenger − {other}", comparison.get("note", "not compared"), "", ""))
    test = evaluation["test_slice"]
    caption = (f"<p>Test slice: {test['trades']:,} trades over {test['hours']:.1f} h of market time, "
               f"{test['independent_windows']:g} independent windows. Intervals: {evaluation['interval']['level']:.0%} "
               f"{html.escape(evaluation['interval']['method'])}, {html.escape(evaluation['interval']['bootstrap'])}, "
               f"blocks of {evaluation['interval']['block_rows']} rows.</p>")
    width = 1 + len(models)
    return ("<h2>Evaluation on the test slice</h2>" + caption
            + _table(["metric", *models], [row[:width] for row in rows]))


def interval_text(entry: dict | None) -> str:
    """"value [lower, upper]" of an evaluation.json metric; "n/a" where it could not be measured."""
    if not entry:
        return ""
    if "NaN" in (entry["value"], entry["lower"], entry["upper"]):
        return "n/a"
    return f"{entry['value']:.3f} [{entry['lower']:.3f}, {entry['upper']:.3f}]"


# ---------------------------------------------------------------- live quality

def _action(entry: dict | None) -> str:
    if not entry:
        return "not yet"
    detail = entry.get("request") or entry.get("to") or entry.get("reason", "")
    return f"{entry['action']}: {detail}" if entry["action"] != "skipped" else "skipped"


def _live_quality(live_quality: dict, path: Path) -> str:
    """The panel: live lift per window and model version with its interval, and the windows' table."""
    judged = [w for w in live_quality["windows"] if "lift" in w]
    versions = sorted({w["model_version"] for w in judged})
    starts = sorted({w["start"] for w in judged})
    figure, axes = plt.subplots(figsize=(9, 3.4))
    for offset, version in enumerate(versions):
        mine = [w for w in judged if w["model_version"] == version]
        x = [starts.index(w["start"]) + 0.12 * (offset - (len(versions) - 1) / 2) for w in mine]
        values = [w["lift"]["value"] for w in mine]
        errors = [[v - w["lift"]["lower"] for v, w in zip(values, mine, strict=True)],
                  [w["lift"]["upper"] - v for v, w in zip(values, mine, strict=True)]]
        axes.errorbar(x, values, yerr=errors, fmt="o", capsize=3, label=f"v{version}")
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(starts)), [start[:16] for start in starts], rotation=20, fontsize=8)
    axes.set_ylabel("live lift")
    if versions:
        axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    rows = [(f"v{w['model_version']}", w["start"], w["trades"], w["status"], interval_text(w.get("precision")),
             interval_text(w.get("lift"))) for w in live_quality["windows"]]
    return (_figure("Live quality of the models in service", path.name,
                    f"Lift over the base rate of the scored trades whose outcome is known, per "
                    f"{live_quality.get('window_hours', '?')} h window and model version, 95 % block-bootstrap "
                    f"intervals; a window with too little market time is not judged.")
            + _table(["model", "window start", "trades", "status", "precision", "lift"], rows))
