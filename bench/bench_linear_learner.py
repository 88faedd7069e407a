"""Local Linear Learner, tuner and endpoint: times against scikit-learn and in-process baselines.

1. One training job (7,000 x 605, 15 epochs) against scikit-learn's LogisticRegression on the same rows
   (both read the same CSV; scikit-learn with its faster thread setting on this machine): seconds and test AUC.
2. The whole tuning job (10 jobs, 2 in parallel) against the sum of its jobs' own durations.
3. The endpoint through boto3 `invoke_endpoint`: p50/p99 latency of one record against the same request
   answered in-process, and rows/s for a 10,000-row CSV (sent in requests under the 6 MiB limit) against
   in-process scoring and against batch transform of the same file.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.measure import table
from bench.planted_data import planted_data, write_channels, write_csv

BASE = {"predictor_type": "binary_classifier", "feature_dim": "605", "epochs": "15"}
TUNING_RANGES = {
    "ContinuousParameterRanges": [
        {"Name": name, "MinValue": low, "MaxValue": high, "ScalingType": "Auto"}
        for name, low, high in (("wd", "1e-07", "1"), ("l1", "1e-07", "1"), ("learning_rate", "1e-05", "1"),
                                ("positive_example_weight_mult", "1e-05", "100000"))],
    "IntegerParameterRanges": [{"Name": "mini_batch_size", "MinValue": "100", "MaxValue": "5000",
                                "ScalingType": "Auto"}],
    "CategoricalParameterRanges": [{"Name": "use_bias", "Values": ["True", "False"]}],
}
IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1"
SEED_TUNING_SECONDS = 15 * 60  # the seed's 10 jobs on SageMaker (reference/linear-learner.md), not measured here


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def training(channels: dict[str, Path], work: Path) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from pipelines.local.algorithms.linear_learner.training import read_channel, train

    def ours(**extra):
        return train({**BASE, **extra}, channels, work / "model", log=lambda _: None)

    def scikit_learn(threads):
        with threadpool_limits(threads):
            x, y = read_channel("train", channels["train"])
            x_test, y_test = read_channel("test", channels["test"])
            model = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=1000))
            return roc_auc_score(y_test, model.fit(x, y).predict_proba(x_test)[:, 1])

    for name, path in channels.items():  # decoded beforehand, as every job of a tuning job but the first finds them
        read_channel(name, path)
    one_model, one_metrics = timed(ours, num_models="1")
    eight_models, eight_metrics = timed(ours)
    baseline, baseline_auc = min((timed(scikit_learn, threads) for threads in (1, None)), key=lambda r: r[0])
    return [
        {"job (7000 x 605, 15 epochs)": "scikit-learn LogisticRegression (baseline)", "seconds": f"{baseline:.2f}",
         "x baseline": "1.00", "test AUC": f"{baseline_auc:.4f}"},
        {"job (7000 x 605, 15 epochs)": "local Linear Learner, 1 model (as under tuning)",
         "seconds": f"{one_model:.2f}", "x baseline": f"{one_model / baseline:.2f}",
         "test AUC": f"{one_metrics['test:roc_auc_score']:.4f}"},
        {"job (7000 x 605, 15 epochs)": "local Linear Learner, num_models auto (8)",
         "seconds": f"{eight_models:.2f}", "x baseline": f"{eight_models / baseline:.2f}",
         "test AUC": f"{eight_metrics['test:roc_auc_score']:.4f}"},
    ]


def tuning(channels: dict[str, Path], work: Path) -> list[dict]:
    from pipelines.local.steps.tuning import run_tuning_job

    request = {
        "HyperParameterTuningJobName": "bench",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian", "ParameterRanges": TUNING_RANGES,
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 10, "MaxParallelTrainingJobs": 2},
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:precision"}},
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": IMAGE},
            "StaticHyperParameters": {**BASE, "target_recall": "0.25",
                                      "binary_classifier_model_selection_criteria": "precision_at_target_recall"}},
    }
    seconds, described = timed(run_tuning_job, request, channels, work / "tuning", log=lambda _: None)
    serial = sum((s["TrainingEndTime"] - s["TrainingStartTime"]).total_seconds()
                 for s in described["TrainingJobSummaries"])
    best = described["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    return [
        {"tuning (10 jobs)": "sum of its 10 jobs' own durations (baseline)", "seconds": f"{serial:.1f}",
         "x baseline": "1.00", "best validation:precision": "-"},
        {"tuning (10 jobs)": "local tuning job, 2 parallel processes", "seconds": f"{seconds:.1f}",
         "x baseline": f"{seconds / serial:.2f}", "best validation:precision": f"{best:.4f}"},
        {"tuning (10 jobs)": "the seed's tuning job on SageMaker (reference, not run)",
         "seconds": f"{SEED_TUNING_SECONDS}", "x baseline": f"{SEED_TUNING_SECONDS / serial:.2f}",
         "best validation:precision": "1.0 at recall 0.017"},
    ]


def endpoint(model_tar: Path, work: Path) -> list[dict]:
    import boto3

    from pipelines.local.algorithms.linear_learner import load_model
    from pipelines.local.batch_transform import batch_transform
    from pipelines.local.endpoint import MAX_PAYLOAD_BYTES, EndpointServer, Served, StaticResolver, invoke

    features = planted_data(10_000, seed=7)[0]
    source = write_csv(work / "requests.csv", features)
    lines = source.read_bytes().splitlines(keepends=True)
    per_request = max(1, int(len(lines) * 0.9 * MAX_PAYLOAD_BYTES / source.stat().st_size))
    bodies = [b"".join(lines[i:i + per_request]) for i in range(0, len(lines), per_request)]
    single = lines[0]
    served = Served(load_model(model_tar))

    def percentiles(samples):
        return np.percentile(samples, 50) * 1000, np.percentile(samples, 99) * 1000

    in_process = [timed(invoke, served, single, "text/csv", "application/json")[0] for _ in range(500)]
    in_process_rows, _ = timed(lambda: [invoke(served, body, "text/csv", "application/jsonlines") for body in bodies])
    transform_seconds, _ = timed(batch_transform, model_tar, source, work / "requests.csv.out")
    with EndpointServer(StaticResolver({"bench": str(model_tar)})) as server:
        client = boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")

        def call(body: bytes, accept: str = "application/json") -> bytes:
            return client.invoke_endpoint(EndpointName="bench", ContentType="text/csv", Accept=accept,
                                          Body=body)["Body"].read()

        for _ in range(20):
            call(single)  # warm up connections and the model cache
        remote = [timed(call, single)[0] for _ in range(500)]
        remote_rows, answers = timed(lambda: [call(body, "application/jsonlines") for body in bodies])
    assert sum(len(a.splitlines()) for a in answers) == len(features)
    assert json.loads(answers[0].splitlines()[0])["predicted_label"] in (0, 1)
    local_p50, local_p99 = percentiles(in_process)
    p50, p99 = percentiles(remote)
    return [
        {"endpoint": "one record, in-process decode+predict+encode (baseline)", "p50 ms": f"{local_p50:.2f}",
         "p99 ms": f"{local_p99:.2f}", "rows/s (10k CSV)": f"{len(features) / in_process_rows:,.0f}",
         "x baseline": "1.00"},
        {"endpoint": f"boto3 invoke_endpoint ({len(bodies)} requests of <= 6 MiB for 10k rows)",
         "p50 ms": f"{p50:.2f}", "p99 ms": f"{p99:.2f}", "rows/s (10k CSV)": f"{len(features) / remote_rows:,.0f}",
         "x baseline": f"latency {p50 / local_p50:.1f}x, throughput {in_process_rows / remote_rows:.2f}x"},
        {"endpoint": "batch_transform of the same CSV file", "p50 ms": "-", "p99 ms": "-",
         "rows/s (10k CSV)": f"{len(features) / transform_seconds:,.0f}",
         "x baseline": f"throughput {in_process_rows / transform_seconds:.2f}x"},
    ]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-linear-learner-") as directory:
        work = Path(directory)
        channels = write_channels(work / "data", rows=10_000)
        print(table(training(channels, work)), flush=True)
        print(table(tuning({k: channels[k] for k in ("train", "validation")}, work)), flush=True)
        print(table(endpoint(work / "model" / "model.tar.gz", work)), flush=True)


if __name__ == "__main__":
    main()
