"""Tuning step (CreateHyperParameterTuningJob): the request read, the local tuner run over the local algorithm
of the training image, and DescribeHyperParameterTuningJob's answer shaped.

Up to MaxNumberOfTrainingJobs training jobs run, at most MaxParallelTrainingJobs at a time in separate processes
(pipelines/local/tuner.py searches). Channels are downloaded once and shared by every training job (the Linear
Learner decodes them once, and its jobs memory-map that); each job's artefact is uploaded to
`<S3OutputPath>/<training-job-name>/output/model.tar.gz`, where SageMaker puts it. Properties are
DescribeHyperParameterTuningJob's, with `TrainingJobSummaries` best first (what the SDK's TuningStep properties
read); beyond the API's fields, each summary carries `LaunchOrder` (1 = first launched) and the job's
`FinalMetricDataList`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from livetrain.config import LOCAL_ACCOUNT_ID, Config
from pipelines.local import s3io
from pipelines.local.algorithms import algorithm_for_image
from pipelines.local.errors import StepFailure, TuningError
from pipelines.local.steps.base import Job, plain
from pipelines.local.tuner import SearchSpace, Trial, best_first, tune, warm_up


def run(arguments: dict, job: Job) -> dict:
    definition = arguments.get("TrainingJobDefinition")
    if definition is None:
        raise StepFailure("local tuning needs exactly one TrainingJobDefinition")
    prepare(arguments)  # the workers warm up while the channels download

    channels = {}
    for channel in definition.get("InputDataConfig", []):
        name, source = channel["ChannelName"], channel["DataSource"]["S3DataSource"]
        destination = job.work_dir / "input" / "data" / name
        files = s3io.download_input(job.s3, source["S3Uri"], source.get("S3DataType"), destination,
                                    copies=job.copies)
        job.log(f"channel {name}: {len(files)} file(s) from {source['S3Uri']}")
        channels[name] = destination

    instances = definition.get("ResourceConfig", {}).get("InstanceCount", 1)
    if instances != 1:
        job.log(f"InstanceCount {instances}: each training job runs as one process over its whole channels here "
                "(on SageMaker the algorithm trains on that many instances, each on its share of ShardedByS3Key data)")
    request = {**arguments, "HyperParameterTuningJobName": job.job_name}
    result = plain(run_tuning_job(request, channels, job.work_dir / "jobs", log=job.log))

    output_path = definition["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    for summary in result["TrainingJobSummaries"]:
        name = summary["TrainingJobName"]
        artefact = job.work_dir / "jobs" / name / "output" / "model.tar.gz"
        if artefact.exists():
            s3io.upload_file(job.s3, artefact, f"{output_path}/{name}/output/model.tar.gz")
    job.log(f"uploaded the artefacts of {len(result['TrainingJobSummaries'])} training job(s) to {output_path}/")
    return {**request, **result}


def prepare(arguments: dict) -> None:
    """Start the training jobs' workers (forked from the warm fork server) while the channels download; a
    request that cannot run is left for `run_tuning_job` to report."""
    config = arguments.get("HyperParameterTuningJobConfig") or {}
    definition = arguments.get("TrainingJobDefinition") or {}
    try:
        algorithm = algorithm_for_image((definition.get("AlgorithmSpecification") or {}).get("TrainingImage") or "")
        max_jobs, max_parallel = resource_limits(config)
    except (TuningError, AttributeError):
        return
    warm_up(max_jobs, max_parallel, worker_imports(algorithm))


def training_job_name(tuning_job_name: str, index: int, hyperparameters: dict[str, str]) -> str:
    """`<tuning-job-name>-NNN-<8 hex>`, as SageMaker names a tuning job's training jobs (≤ 63 chars)."""
    digest = hashlib.sha1(json.dumps([tuning_job_name, index, hyperparameters], sort_keys=True).encode())
    return f"{tuning_job_name[:32]}-{index + 1:03d}-{digest.hexdigest()[:8]}"


def run_training_job(train: Callable, static: dict[str, str], channels: dict[str, Path], work_dir: Path,
                     tuning_job_name: str, index: int, hyperparameters: dict[str, str]) -> dict[str, float]:
    """One training job of a tuning job (runs in a worker): its log and artefact under work_dir/<job name>/."""
    job_dir = Path(work_dir) / training_job_name(tuning_job_name, index, hyperparameters)
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / "training.log", "w", encoding="utf-8") as log_file:
        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()

        try:
            return train({**static, **hyperparameters}, channels, job_dir / "output", log=log)
        except Exception:
            log(f"Training failed:\n{traceback.format_exc()}")
            raise


def resource_limits(config: dict) -> tuple[int, int]:
    """(MaxNumberOfTrainingJobs, MaxParallelTrainingJobs) of a HyperParameterTuningJobConfig; TuningError if bad."""
    limits = config.get("ResourceLimits") or {}
    try:
        max_jobs = int(limits["MaxNumberOfTrainingJobs"])
        max_parallel = int(limits.get("MaxParallelTrainingJobs", 1))
    except (KeyError, TypeError, ValueError):
        raise TuningError("ResourceLimits needs integer MaxNumberOfTrainingJobs and MaxParallelTrainingJobs") from None
    if max_jobs < 1 or max_parallel < 1:
        raise TuningError("MaxNumberOfTrainingJobs and MaxParallelTrainingJobs must be at least 1")
    return max_jobs, max_parallel


def worker_imports(algorithm) -> tuple[str, ...]:
    """What a training job's worker imports before its first job: this module (the job) and the algorithm's."""
    return (__name__, *algorithm.TRAINING_IMPORTS)


def run_tuning_job(request: dict, channels: dict[str, Path], work_dir: Path, seed: int = 0, log=print) -> dict:
    """Run a CreateHyperParameterTuningJob request locally; returns a DescribeHyperParameterTuningJob-shaped dict.

    `channels` maps channel names to local directories (already downloaded). Each training job writes
    `work_dir/<training-job-name>/output/model.tar.gz` and `work_dir/<training-job-name>/training.log`.
    HyperParameterTuningJobConfig.RandomSeed, when set, overrides `seed`. Beyond the API's fields, each
    summary carries `LaunchOrder` (1 = first launched) and the job's `FinalMetricDataList`.
    Raises TuningError for a request that cannot run and when every training job failed.
    """
    config = request.get("HyperParameterTuningJobConfig") or {}
    definition = request.get("TrainingJobDefinition")
    if definition is None:
        definitions = request.get("TrainingJobDefinitions") or []
        if len(definitions) != 1:
            raise TuningError("the request needs one TrainingJobDefinition (several definitions are not "
                              "supported locally)")
        definition = definitions[0]
    objective = config.get("HyperParameterTuningJobObjective") or definition.get("TuningObjective") or {}
    metric, direction = objective.get("MetricName"), objective.get("Type")
    if not metric or direction not in ("Maximize", "Minimize"):
        raise TuningError("HyperParameterTuningJobObjective needs a MetricName and Type Maximize or Minimize")
    max_jobs, max_parallel = resource_limits(config)
    space = SearchSpace.from_ranges(config.get("ParameterRanges") or definition.get("HyperParameterRanges") or {})
    strategy = config.get("Strategy", "Bayesian")
    seed = int(config.get("RandomSeed", seed))
    image = (definition.get("AlgorithmSpecification") or {}).get("TrainingImage") or ""
    algorithm = algorithm_for_image(image)
    emitted = algorithm.emitted_metrics(channels)
    if metric not in emitted:
        raise TuningError(f"objective metric {metric!r} is not emitted with channels {sorted(channels)}; "
                          f"choose one of {', '.join(emitted)}")
    for channel in definition.get("InputDataConfig") or []:
        content_type = str(channel.get("ContentType") or "text/csv").split(";")[0].strip().lower()
        if content_type not in algorithm.TRAINING_CONTENT_TYPES:
            raise TuningError(f"channel '{channel.get('ChannelName')}' has ContentType {content_type!r}; locally "
                              f"{image} reads {', '.join(algorithm.TRAINING_CONTENT_TYPES)}")
    static = {str(k): str(v) for k, v in (definition.get("StaticHyperParameters") or {}).items()}
    static["_tuning_objective_metric"] = metric
    try:
        example = space.hyperparameters(space.random_point(np.random.default_rng(seed)))
        algorithm.parse_hyperparameters({**static, **example})
    except ValueError as exc:
        raise TuningError(f"the training job definition is invalid: {exc}") from None

    name = request.get("HyperParameterTuningJobName") or "tuning-" + hashlib.sha1(
        json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:8]
    maximize = direction == "Maximize"
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    created = time.time()
    log(f"Tuning job {name}: {strategy} search over {', '.join(p.name for p in space.parameters)}; "
        f"{max_jobs} training jobs of {image}, {max_parallel} in parallel; objective {direction} {metric}")

    def report(trial: Trial, trials: list[Trial]) -> None:
        done = [t for t in trials if t.status != "InProgress"]
        scores = [t.objective for t in done if t.objective is not None]
        best = (max if maximize else min)(scores) if scores else None
        result = f"{metric}={trial.objective:.6g}" if trial.objective is not None else trial.failure_reason
        log(f"[{len(done)}/{max_jobs}] {training_job_name(name, trial.index, trial.hyperparameters)} "
            f"{trial.status} in {trial.end - trial.start:.1f} s: {result}"
            + (f" (best so far {best:.6g})" if best is not None else ""))

    job = partial(run_training_job, algorithm.train, static, {k: Path(v) for k, v in channels.items()}, work_dir, name)
    trials = tune(space, job, max_jobs=max_jobs, max_parallel=max_parallel, objective_metric=metric,
                  maximize=maximize, strategy=strategy, seed=seed, on_trial=report, preload=worker_imports(algorithm))
    ranked = best_first(trials, maximize)
    if ranked[0].objective is None:
        raise TuningError(f"all {len(trials)} training jobs failed; the first: {trials[0].failure_reason}")
    return _describe(name, config, definition, created, trials, ranked, metric)


def _describe(name, config, definition, created, trials, ranked, metric) -> dict:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or Config.region
    role = str(definition.get("RoleArn", ""))
    account = role.split(":")[4] if role.count(":") >= 5 and role.split(":")[4] else LOCAL_ACCOUNT_ID
    arn = f"arn:aws:sagemaker:{region}:{account}:"

    def stamp(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, tz=UTC)

    def summary(trial: Trial) -> dict:
        job_name = training_job_name(name, trial.index, trial.hyperparameters)
        item = {
            "TrainingJobName": job_name,
            "TrainingJobArn": f"{arn}training-job/{job_name}",
            "TuningJobName": name,
            "CreationTime": stamp(trial.created),
            "TrainingStartTime": stamp(trial.start),
            "TrainingEndTime": stamp(trial.end),
            "TrainingJobStatus": trial.status,
            "TunedHyperParameters": dict(trial.hyperparameters),
            "ObjectiveStatus": "Succeeded" if trial.objective is not None else "Failed",
            "LaunchOrder": trial.index + 1,
            "FinalMetricDataList": [{"MetricName": k, "Value": v, "Timestamp": stamp(trial.end)}
                                    for k, v in sorted(trial.metrics.items())],
        }
        if trial.objective is not None:
            item["FinalHyperParameterTuningJobObjectiveMetric"] = {"MetricName": metric, "Value": trial.objective}
        else:
            item["FailureReason"] = trial.failure_reason
        return item

    failed = sum(t.objective is None for t in trials)
    ended = max(t.end for t in trials)
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobArn": f"{arn}hyper-parameter-tuning-job/{name.lower()}",
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
        "HyperParameterTuningJobStatus": "Completed",
        "CreationTime": stamp(created),
        "HyperParameterTuningEndTime": stamp(ended),
        "LastModifiedTime": stamp(ended),
        "TrainingJobStatusCounters": {"Completed": len(trials) - failed, "InProgress": 0, "RetryableError": 0,
                                      "NonRetryableError": failed, "Stopped": 0},
        "ObjectiveStatusCounters": {"Succeeded": len(trials) - failed, "Pending": 0, "Failed": failed},
        "BestTrainingJob": summary(ranked[0]),
        "TrainingJobSummaries": [summary(t) for t in ranked],
    }
