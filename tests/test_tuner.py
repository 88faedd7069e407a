"""The local tuner: the search itself on a known function (through the same process-pool path as
training jobs), the API-shaped request and response on the local Linear Learner, and its errors."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench.planted_data import write_channels
from pipelines.local.errors import TuningError
from pipelines.local.steps.tuning import run_tuning_job
from pipelines.local.tuner import RandomSearch, SearchSpace, Suggester, best_first, tune

IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1"
# The recommended Linear Learner ranges, shaped as SDK v3 writes them into a pipeline definition.
RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "learning_rate", "MinValue": "1e-05", "MaxValue": "1", "ScalingType": "Auto"},
        {"Name": "wd", "MinValue": "1e-07", "MaxValue": "1", "ScalingType": "Auto"},
    ],
    "IntegerParameterRanges": [{"Name": "mini_batch_size", "MinValue": "100", "MaxValue": "5000",
                                "ScalingType": "Logarithmic"}],
    "CategoricalParameterRanges": [{"Name": "use_bias", "Values": ["True", "False"]}],
}


def known_function(index: int, hyperparameters: dict[str, str]) -> dict[str, float]:
    """A smooth objective over the ranges above, best (0.5) at lr 10^-2.5, wd 10^-4, batch 1000, bias."""
    lr, wd = math.log10(float(hyperparameters["learning_rate"])), math.log10(float(hyperparameters["wd"]))
    batch = math.log10(int(hyperparameters["mini_batch_size"]))
    penalty = (lr + 2.5) ** 2 + 0.5 * (wd + 4) ** 2 + 2 * (batch - 3) ** 2
    return {"objective": 0.5 * (hyperparameters["use_bias"] == "True") - penalty}


def meet(directory: str, parties: int, index: int, hyperparameters: dict[str, str]) -> dict[str, float]:
    """Arrive, then wait (up to 60 s) until `parties` jobs have arrived: 1 when they all met, else 0."""
    Path(directory, str(index)).touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(os.listdir(directory)) >= parties:
            return {"met": 1.0}
        time.sleep(0.01)
    return {"met": 0.0}


def die_in_job_one(index: int, hyperparameters: dict[str, str]) -> dict[str, float]:
    """Job 1 ends its own process, as a segfault or the OOM killer would."""
    if index == 1:
        os._exit(3)
    return known_function(index, hyperparameters)


def hold(directory: str, index: int, hyperparameters: dict[str, str]) -> dict[str, float]:
    """Write this process's pid to `directory`, then work for a minute."""
    Path(directory, str(os.getpid())).touch()
    time.sleep(60)
    return {"objective": 0.0}


def fail_odd_jobs(index: int, hyperparameters: dict[str, str]) -> dict[str, float]:
    if index % 2:
        raise ValueError(f"job {index} is odd")
    return known_function(index, hyperparameters)


class BrokenSearch(RandomSearch):
    """Fails its third suggestion with an error, or ends its process on the fourth."""

    def suggest(self, index, observed, pending):
        if index == 2:
            raise ValueError("no point to suggest")
        if index == 3:
            os._exit(7)
        return super().suggest(index, observed, pending)


def run(job, strategy="Bayesian", seed=0, max_jobs=15, max_parallel=2, metric="objective"):
    return tune(SearchSpace.from_ranges(RANGES), job, max_jobs=max_jobs, max_parallel=max_parallel,
                objective_metric=metric, maximize=True, strategy=strategy, seed=seed)


@pytest.mark.slow  # ~15 s: ten tuning runs (on the same warm workers)
def test_bayesian_search_beats_random_search_on_the_same_budget():
    best = {strategy: [max(t.objective for t in run(known_function, strategy, seed)) for seed in range(5)]
            for strategy in ("Bayesian", "Random")}
    wins = sum(b > r for b, r in zip(best["Bayesian"], best["Random"], strict=True))
    assert np.mean(best["Bayesian"]) > np.mean(best["Random"]) + 0.2, best
    assert wins >= 3, best


def test_parallel_jobs_run_at_the_same_time_in_separate_processes(tmp_path):
    trials = run(partial(meet, str(tmp_path), 2), strategy="Random", max_jobs=2, metric="met")
    assert [t.objective for t in trials] == [1.0, 1.0]  # each job saw the other arrive
    assert len({t.pid for t in trials}) == 2 and os.getpid() not in {t.pid for t in trials}


def test_the_workers_start_once_and_serve_every_job_and_the_next_tuning_job():
    first = run(known_function, strategy="Random", max_jobs=6)
    again = run(known_function, strategy="Random", max_jobs=6)
    pids = {t.pid for t in first}
    assert len(pids) == 2 and os.getpid() not in pids  # six jobs, two processes
    assert {t.pid for t in again} == pids  # kept warm for the next tuning job of the same shape


def test_a_job_whose_process_dies_fails_alone_and_a_fresh_worker_takes_its_place():
    trials = run(die_in_job_one, strategy="Random", max_jobs=5)
    assert [t.status for t in trials] == ["Completed", "Failed", "Completed", "Completed", "Completed"]
    assert trials[1].failure_reason == "AlgorithmError: the training job's process died (exit code 3)"
    assert trials[1].pid not in {t.pid for t in trials[2:]}


def test_sigterm_to_the_tuning_process_leaves_no_worker_behind(tmp_path):
    """Nor anything else it started: the search's process, the fork server the workers come from."""
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from functools import partial\nimport test_tuner\n"
              f"test_tuner.run(partial(test_tuner.hold, {str(tmp_path)!r}), strategy='Random', max_jobs=4)\n")
    tuning = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(tmp_path)) < 2 and time.monotonic() < deadline and tuning.poll() is None:
            time.sleep(0.05)
        workers = [psutil.Process(int(name)) for name in os.listdir(tmp_path)]
        assert len(workers) == 2
        started = psutil.Process(tuning.pid).children(recursive=True)
        assert {w.pid for w in workers} < {p.pid for p in started}
        commands = {p.pid: " ".join(p.cmdline())[-100:] for p in started}
        tuning.send_signal(signal.SIGTERM)
        tuning.wait(10)
        _, alive = psutil.wait_procs(started, timeout=10)
        assert [commands[p.pid] for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        tuning.kill()


def test_the_search_runs_in_a_process_of_its_own_whose_errors_are_raised_here():
    search = BrokenSearch(SearchSpace.from_ranges(RANGES), seed=0)
    with Suggester(search) as suggester:
        assert suggester.suggest(0, [], []) == search.suggest(0, [], [])  # the same point as in this process
        assert suggester.process.pid != os.getpid()
        with pytest.raises(ValueError, match="no point to suggest"):
            suggester.suggest(2, [], [])
        assert suggester.suggest(1, [], []) == search.suggest(1, [], [])  # it goes on after an error
        with pytest.raises(TuningError, match=r"the search's process ended unexpectedly \(exit code 7\)"):
            suggester.suggest(3, [], [])


def test_the_same_seed_gives_the_same_jobs():
    first, again, other = (run(known_function, seed=seed, max_jobs=6) for seed in (7, 7, 8))
    assert [t.hyperparameters for t in first] == [t.hyperparameters for t in again]
    assert [t.hyperparameters for t in first] != [t.hyperparameters for t in other]


def test_failed_jobs_are_reported_and_ranked_last():
    trials = run(fail_odd_jobs, strategy="Random", max_jobs=4)
    assert [t.status for t in trials] == ["Completed", "Failed", "Completed", "Failed"]
    assert trials[1].failure_reason == "ClientError: job 1 is odd"
    ranked = best_first(trials, maximize=True)
    assert [t.index for t in ranked[2:]] == [1, 3]
    assert ranked[0].objective >= ranked[1].objective


FIVE_RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "wd", "MinValue": "1e-07", "MaxValue": "1", "ScalingType": "Auto"},
        {"Name": "momentum", "MinValue": "0.9", "MaxValue": "0.9999", "ScalingType": "ReverseLogarithmic"},
        {"Name": "f_beta", "MinValue": "0.5", "MaxValue": "2", "ScalingType": "Auto"}],
    "IntegerParameterRanges": [{"Name": "epochs", "MinValue": "1", "MaxValue": "3"}],
    "CategoricalParameterRanges": [{"Name": "loss", "Values": ["auto", "logistic"]}]}


def test_ranges_follow_their_scaling_type():
    space = SearchSpace.from_ranges(FIVE_RANGES)
    assert [p.scaling for p in space.parameters] == [
        "Logarithmic", "ReverseLogarithmic", "Linear", "Linear", "Linear"]
    rng = np.random.default_rng(0)
    samples = [space.random_point(rng) for _ in range(3000)]
    wd, momentum, f_beta, epochs, loss = zip(*samples, strict=True)
    assert np.median(np.log10(wd)) == pytest.approx(-3.5, abs=0.2)  # log-uniform over 7 decades
    assert np.median(np.log10(1 - np.array(momentum))) == pytest.approx(-2.5, abs=0.1)
    assert np.median(f_beta) == pytest.approx(1.25, abs=0.1)
    assert {1, 2, 3} == set(epochs) and min(np.bincount(epochs)[1:]) > 800  # the end values as likely
    assert {"auto", "logistic"} == set(loss)
    assert space.hyperparameters(samples[0])["epochs"] in {"1", "2", "3"}


def test_the_candidates_near_a_point_stay_near_it_on_each_range_scale():
    """Bayesian search scores perturbations of its best points: each coordinate moves by N(0, spread) in unit
    position (so by decades on a logarithmic range), stays in range, and a category is redrawn one time in five."""
    space = SearchSpace.from_ranges(FIVE_RANGES)
    point = (1e-3, 0.99, 1.0, 2, "auto")
    near = space.perturb([point] * 4000, np.random.default_rng(0), np.full(4000, 0.05))
    wd, momentum, f_beta, epochs, loss = (np.array(column) for column in zip(*near, strict=True))
    assert np.std(np.log10(wd)) == pytest.approx(0.05 * 7, rel=0.1)  # 7 decades wide
    assert np.std(np.log10(1 - momentum)) == pytest.approx(0.05 * 3, rel=0.1)  # 3 decades
    assert f_beta.min() >= 0.5 and f_beta.max() <= 2.0 and np.median(f_beta) == pytest.approx(1.0, abs=0.01)
    assert set(epochs) <= {1, 2, 3} and np.mean(epochs == 2) > 0.99  # ±1 needs half a step: 1/6 of the range
    assert np.mean(loss == "logistic") == pytest.approx(0.1, abs=0.02)  # redrawn a fifth of the time, half changed
    encoded = space.encode(near)
    assert encoded.shape == (4000, 6) and np.array_equal(encoded[:, 4:].sum(axis=1), np.ones(4000))
    assert np.allclose(encoded[:, 0], (np.log10(wd) + 7) / 7)


@pytest.mark.parametrize(("ranges", "message"), [
    ({"ContinuousParameterRanges": [{"Name": "wd", "MinValue": "1", "MaxValue": "0.1"}]}, "above MaxValue"),
    ({"ContinuousParameterRanges": [{"Name": "wd", "MinValue": "0", "MaxValue": "1",
                                     "ScalingType": "Logarithmic"}]}, "MinValue > 0"),
    ({"IntegerParameterRanges": [{"Name": "epochs", "MinValue": "1.5", "MaxValue": "3"}]}, "non-integer"),
    ({"CategoricalParameterRanges": [{"Name": "loss", "Values": []}]}, "no Values"),
    ({}, "no hyperparameter to tune"),
])
def test_bad_ranges_are_refused(ranges, message):
    with pytest.raises(TuningError, match=message):
        SearchSpace.from_ranges(ranges)


# --- the API on the local Linear Learner ---

@pytest.fixture(scope="module")
def small_channels(tmp_path_factory):
    return write_channels(tmp_path_factory.mktemp("tuning-data"), rows=2500, features=605, seed=1)


def tuning_request(max_jobs=4, image=IMAGE, metric="validation:precision", content_type="text/csv", **static):
    """A CreateHyperParameterTuningJob request as a pipeline definition's Tuning step carries it."""
    return {
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxParallelTrainingJobs": 2, "MaxNumberOfTrainingJobs": max_jobs},
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": metric},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "wd", "MinValue": "1e-07", "MaxValue": "1", "ScalingType": "Auto"},
                    {"Name": "l1", "MinValue": "1e-07", "MaxValue": "1", "ScalingType": "Auto"},
                    {"Name": "learning_rate", "MinValue": "1e-05", "MaxValue": "1", "ScalingType": "Auto"},
                    {"Name": "positive_example_weight_mult", "MinValue": "1e-05", "MaxValue": "100000",
                     "ScalingType": "Auto"}],
                "IntegerParameterRanges": [{"Name": "mini_batch_size", "MinValue": "100", "MaxValue": "5000",
                                            "ScalingType": "Auto"}],
                "CategoricalParameterRanges": [{"Name": "use_bias", "Values": ["True", "False"]}]},
            "TrainingJobEarlyStoppingType": "Off"},
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": image},
            "RoleArn": "arn:aws:iam::111122223333:role/livetrain",
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/tuning"},
            "StaticHyperParameters": {"predictor_type": "binary_classifier", "feature_dim": "605", "epochs": "5",
                                      "binary_classifier_model_selection_criteria": "precision_at_target_recall",
                                      "target_recall": "0.25", "normalize_data": "True", **static},
            "InputDataConfig": [{"ChannelName": "train", "ContentType": content_type},
                                {"ChannelName": "validation", "ContentType": "text/csv"}],
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30}},
    }


def test_a_tuning_job_of_linear_learner_is_described_as_sagemaker_does(small_channels, tmp_path):
    request = {**tuning_request(), "HyperParameterTuningJobName": "tune-abc"}
    lines = []
    channels = {k: small_channels[k] for k in ("train", "validation")}
    described = run_tuning_job(request, channels, tmp_path, seed=1, log=lines.append)

    summaries = described["TrainingJobSummaries"]
    values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in summaries]
    assert values == sorted(values, reverse=True)  # best first
    assert described["BestTrainingJob"] == summaries[0]
    assert sorted(s["LaunchOrder"] for s in summaries) == [1, 2, 3, 4]
    assert described["TrainingJobStatusCounters"]["Completed"] == 4
    assert described["HyperParameterTuningJobStatus"] == "Completed"
    assert described["HyperParameterTuningJobArn"].startswith("arn:aws:sagemaker:us-east-1:111122223333:")
    for summary in summaries:
        name = summary["TrainingJobName"]
        assert re.fullmatch(rf"tune-abc-{summary['LaunchOrder']:03d}-[0-9a-f]{{8}}", name) and len(name) <= 63
        assert set(summary["TunedHyperParameters"]) == {"wd", "l1", "learning_rate", "positive_example_weight_mult",
                                                        "mini_batch_size", "use_bias"}
        assert (tmp_path / name / "output" / "model.tar.gz").is_file()
        # The objective is what SageMaker's metric regex reads from the job's log.
        log = (tmp_path / name / "training.log").read_text()
        logged = re.findall(r"#quality_metric: host=\S+, validation precision <score>=(\S+)", log)
        assert float(logged[-1]) == summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        assert summary["TrainingStartTime"] <= summary["TrainingEndTime"] <= described["HyperParameterTuningEndTime"]
    assert len([line for line in lines if re.match(r"\[\d/4\] tune-abc-\d{3}-", line)]) == 4


@pytest.mark.parametrize(("change", "message"), [
    ({"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/xgboost:1.7-1"},
     "no local implementation for training image '.*xgboost"),
    ({"metric": "test:precision"}, "objective metric 'test:precision' is not emitted.*validation:precision"),
    ({"mini_batch_sise": "100"}, "invalid: unknown hyperparameter 'mini_batch_sise'"),
    ({"epochs": "many"}, "invalid: invalid hyperparameter epochs='many'"),
    ({"content_type": "application/x-recordio-protobuf"}, "channel 'train' has ContentType 'application/x-recordio"),
])
def test_a_request_that_cannot_run_fails_before_any_job(small_channels, tmp_path, change, message):
    with pytest.raises(TuningError, match=message):
        run_tuning_job(tuning_request(**change), {k: small_channels[k] for k in ("train", "validation")}, tmp_path,
                       log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_when_every_job_fails_the_tuning_job_fails_with_the_first_reason(small_channels, tmp_path):
    request = tuning_request(max_jobs=2, feature_dim="604")
    with pytest.raises(TuningError, match=r"all 2 training jobs failed; the first: ClientError: feature_dim is 604"):
        run_tuning_job(request, {k: small_channels[k] for k in ("train", "validation")}, tmp_path, log=lambda _: None)
