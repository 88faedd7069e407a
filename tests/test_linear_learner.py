"""The local Linear Learner: accuracy against scikit-learn, the documented hyperparameters' effects,
threshold selection, metrics as the container logs them, the artefact, request formats, batch transform."""

from __future__ import annotations

import io
import json
import re
import tarfile

import numpy as np
import pytest

from bench.planted_data import planted_data, write_channels, write_csv
from pipelines.local.algorithms.linear_learner import (
    decode_request,
    emitted_metrics,
    encode_response,
    load_model,
    train,
)
from pipelines.local.algorithms.linear_learner.training import read_channel, roc_auc
from pipelines.local.batch_transform import batch_transform
from pipelines.local.errors import (
    BadRequest,
    LinearLearnerError,
    TransformError,
    UnsupportedAccept,
    UnsupportedContentType,
)

BASE = {"predictor_type": "binary_classifier", "feature_dim": "605"}
# The regexes SageMaker's tuning uses for the built-in Linear Learner (its MetricDefinitions).
CONTAINER_REGEXES = {
    "validation:precision": r"#quality_metric: host=\S+, validation precision <score>=(\S+)",
    "validation:recall": r"#quality_metric: host=\S+, validation recall <score>=(\S+)",
    "validation:binary_f_beta": r"#quality_metric: host=\S+, validation binary_f_\S+ <score>=(\S+)",
    "validation:binary_classification_accuracy":
        r"#quality_metric: host=\S+, validation binary_classification_accuracy <score>=(\S+)",
    "validation:objective_loss": r"#quality_metric: host=\S+, epoch=\S+, validation \S+_objective <loss>=(\S+)",
    "train:objective_loss": r"#quality_metric: host=\S+, epoch=\S+, train \S+_objective <loss>=(\S+)",
    "test:roc_auc_score": r"#quality_metric: host=\S+, test roc_auc_score <score>=(\S+)",
    "test:precision": r"#quality_metric: host=\S+, test precision <score>=(\S+)",
}


@pytest.fixture(scope="session")
def channels(tmp_path_factory):
    """10,000 planted-signal rows of 605 features split 70/15/15 (train 7,000 rows)."""
    return write_channels(tmp_path_factory.mktemp("planted"), rows=10_000)


def fit(channels, tmp_path, used=("train", "validation"), **hyperparameters):
    lines = []
    metrics = train({**BASE, **hyperparameters}, {k: channels[k] for k in used}, tmp_path / "model", log=lines.append)
    return metrics, load_model(tmp_path / "model" / "model.tar.gz"), lines


def test_test_auc_is_within_0_01_of_scikit_learn(channels, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    metrics, model, _ = fit(channels, tmp_path, used=("train", "validation", "test"))
    x, y = read_channel("train", channels["train"])
    x_test, y_test = read_channel("test", channels["test"])
    baseline = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=1000)).fit(x, y)
    sklearn_auc = roc_auc_score(y_test, baseline.predict_proba(x_test)[:, 1])
    assert sklearn_auc > 0.7  # the planted signal is there to be found
    assert metrics["test:roc_auc_score"] >= sklearn_auc - 0.01
    # The reported metric is the artefact's: recomputed from the loaded model's scores.
    assert roc_auc_score(y_test, model.predict(x_test)[0]) == pytest.approx(metrics["test:roc_auc_score"])


def test_data_larger_than_a_block_is_shuffled_a_block_at_a_time_and_still_learnt(channels, tmp_path, monkeypatch):
    """Past BLOCK_BYTES of features a job reads blocks of consecutive rows in random order, each shuffled within
    (its memory stays one block at any size): an epoch still sees every row once, and the planted signal is still
    found as well as with the whole train slice shuffled at once (the test above)."""
    from pipelines.local.algorithms.linear_learner import training

    whole, _, _ = fit(channels, tmp_path / "whole", used=("train", "validation", "test"))
    monkeypatch.setattr(training, "BLOCK_BYTES", 1000 * 605 * 4)  # 7 blocks of the 7,000 train rows
    x, _ = read_channel("train", channels["train"])
    raw = x.read()
    scaler = training._Scaler(raw.mean(axis=0, dtype=np.float64), raw.std(axis=0, dtype=np.float64) + 1.0)
    channel = training._Standardized(x, scaler, training.block_rows(x.width, 300))
    assert channel.held is None  # 7 blocks: read as they are used
    batches = list(channel.minibatches(300, np.random.default_rng(1)))
    rows = np.concatenate([numbers for numbers, _ in batches])
    assert np.array_equal(np.sort(rows), np.arange(len(x)))  # every row once
    assert all(len(set(numbers // 1000)) == 1 for numbers, _ in batches)  # a mini-batch comes from one block
    blocks = [int(numbers[0] // 1000) for numbers, _ in batches]
    visits = [block for i, block in enumerate(blocks) if i == 0 or block != blocks[i - 1]]
    assert sorted(visits) == list(range(7)) and visits != sorted(visits)  # each block once, in random order
    standardized = (raw - scaler.mean) / scaler.scale  # as read, standardised (in float32)
    assert all(np.allclose(features, standardized[numbers], atol=1e-5) for numbers, features in batches)

    blocked, _, _ = fit(channels, tmp_path / "blocked", used=("train", "validation", "test"))
    assert blocked["test:roc_auc_score"] >= whole["test:roc_auc_score"] - 0.01


def test_roc_auc_counts_ties_one_half_as_scikit_learn_does():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500).astype(float)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # a few distinct values: many ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc(scores, np.zeros(500)) == 0.5


def test_precision_at_target_recall_picks_the_most_precise_threshold_reaching_the_recall(channels, tmp_path):
    from sklearn.metrics import precision_recall_curve

    metrics, model, _ = fit(channels, tmp_path, binary_classifier_model_selection_criteria="precision_at_target_recall",
                            target_recall="0.25")
    x, y = read_channel("validation", channels["validation"])
    scores, labels = model.predict(x)
    recall = labels[y == 1].mean()
    precision = y[labels == 1].mean()
    assert recall >= 0.25
    assert (recall, precision) == pytest.approx((metrics["validation:recall"], metrics["validation:precision"]))
    curve_precision, curve_recall, _ = precision_recall_curve(y, scores)
    assert precision == pytest.approx(curve_precision[curve_recall >= 0.25].max())


def test_l1_gives_exact_zeros_and_more_of_them_as_it_grows(channels, tmp_path):
    zeros = [int(np.sum(fit(channels, tmp_path, num_models="1", l1=l1)[1].weights == 0)) for l1 in ("0", "0.01", "0.1")]
    assert zeros[0] == 0
    assert 0 < zeros[1] < zeros[2] < 605


def test_a_higher_positive_example_weight_gives_a_higher_recall(channels, tmp_path):
    recalls = [fit(channels, tmp_path, num_models="1", binary_classifier_model_selection_criteria="loss_function",
                   positive_example_weight_mult=weight)[0]["validation:recall"] for weight in ("0.3", "1", "3")]
    assert recalls[0] < recalls[1] < recalls[2]


def test_metrics_are_logged_as_the_container_logs_them(channels, tmp_path):
    metrics, _, lines = fit(channels, tmp_path, used=("train", "validation", "test"), epochs="4")
    log = "\n".join(lines)
    for name, regex in CONTAINER_REGEXES.items():
        values = re.findall(regex, log)
        assert values, name
        if "epoch=" not in regex:
            assert float(values[-1]) == pytest.approx(metrics[name])
    assert len(re.findall(CONTAINER_REGEXES["train:objective_loss"], log)) == 4  # one per epoch
    assert sorted(metrics) == sorted(emitted_metrics(("train", "validation", "test")))


def test_without_validation_the_model_is_chosen_and_scored_on_train(channels, tmp_path):
    metrics, _, _ = fit(channels, tmp_path, used=("train",), epochs="3")
    assert sorted(metrics) == sorted(emitted_metrics(("train",)))
    assert 0.5 < metrics["train:roc_auc_score"] <= 1


def test_early_stopping_ends_training_before_the_last_epoch(channels, tmp_path):
    _, _, lines = fit(channels, tmp_path, epochs="40", early_stopping_patience="1", num_models="1",
                      learning_rate="0.1")
    epochs = re.findall(r"epoch=(\d+), train", "\n".join(lines))
    assert any(line.startswith("Early stop") for line in lines)
    assert len(epochs) < 40


def test_automatic_model_tuning_trains_one_model(channels, tmp_path):
    _, _, lines = fit(channels, tmp_path, epochs="1", _tuning_objective_metric="validation:precision")
    assert any("Training 1 model(s)" in line for line in lines)
    _, _, lines = fit(channels, tmp_path, epochs="1")
    assert any("Training 8 model(s)" in line for line in lines)


def test_the_artefact_holds_json_and_npy_only(channels, tmp_path):
    metrics, model, _ = fit(channels, tmp_path, epochs="2")
    with tarfile.open(tmp_path / "model" / "model.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert sorted(members) == ["mean.npy", "model.json", "scale.npy", "weights.npy"]
    meta = json.loads(members["model.json"])
    assert meta["threshold"] == model.threshold and meta["feature_dim"] == 605
    for name in ("mean.npy", "scale.npy", "weights.npy"):
        assert np.load(io.BytesIO(members[name]), allow_pickle=False).shape == (605,)
    x, y = read_channel("validation", channels["validation"])
    assert np.mean(model.predict(x)[1] == y) == pytest.approx(metrics["validation:binary_classification_accuracy"])


def test_a_pickled_array_is_refused(tmp_path, channels):
    fit(channels, tmp_path, epochs="1")
    with tarfile.open(tmp_path / "model" / "model.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}] * 605, dtype=object), allow_pickle=True)
    members["weights.npy"] = buffer.getvalue()
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with pytest.raises(LinearLearnerError, match="not a local Linear Learner model"):
        load_model(tmp_path / "evil.tar.gz")


@pytest.mark.parametrize(("hyperparameters", "message"), [
    ({"mini_batch_size": "abc"}, r"mini_batch_size='abc': expected a positive integer"),
    ({"learning_rate": "-1"}, r"learning_rate='-1'"),
    ({"target_recall": "1.5"}, r"target_recall='1.5'"),
    ({"use_bias": "maybe"}, r"use_bias='maybe'"),
    ({"binary_classifier_model_selection_criteria": "auc"}, r"binary_classifier_model_selection_criteria='auc'"),
    ({"learning_rat": "0.1"}, r"unknown hyperparameter 'learning_rat'"),
    ({"predictor_type": "regressor"}, r"predictor_type='regressor'.*not supported by the local Linear Learner"),
    ({"optimizer": "sgd"}, r"optimizer='sgd'.*not supported"),
    ({"predictor_type": None}, r"'predictor_type' is required"),
    ({"feature_dim": "604"}, r"feature_dim is 604 but channel 'train' has 605"),
])
def test_a_bad_hyperparameter_fails_naming_it_and_writes_nothing(channels, tmp_path, hyperparameters, message):
    chosen = {k: v for k, v in {**BASE, **hyperparameters}.items() if v is not None}
    with pytest.raises(LinearLearnerError, match=message):
        train(chosen, {"train": channels["train"]}, tmp_path / "model", log=lambda line: None)
    assert not (tmp_path / "model" / "model.tar.gz").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("2,0.5,0.1\n1,0.2,0.3\n", "labels must be 0 or 1"),
    ("1,abc,0.1\n", "is not numeric text/csv"),
    ("1,0.5,0.1\n0,0.2\n", "is not numeric text/csv|NaN"),
    ("", "has no data"),
])
def test_bad_training_data_fails_with_the_channel_named(tmp_path, content, message):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part.csv").write_text(content)
    with pytest.raises(LinearLearnerError, match=f"channel 'train'.*({message})"):
        train(BASE | {"feature_dim": "auto"}, {"train": tmp_path / "train"}, tmp_path / "model", log=lambda _: None)


def test_a_channel_is_decoded_once_and_read_by_every_later_job(tmp_path):
    (tmp_path / "train").mkdir()
    csv = tmp_path / "train" / "part.csv"
    csv.write_text("1,0.5,0.25\n0,-1.5,2.0\n")
    x, y = read_channel("train", tmp_path / "train")
    assert x.read().tolist() == [[0.5, 0.25], [-1.5, 2.0]] and y.tolist() == [1.0, 0.0]
    decoded = list((tmp_path / ".train.decoded").iterdir())
    read_channel("train", tmp_path / "train")  # a second job: nothing decoded again
    assert list((tmp_path / ".train.decoded").iterdir()) == decoded
    csv.write_text("0,7.0,8.0\n")  # other files (another run's download): decoded afresh
    assert read_channel("train", tmp_path / "train")[0].read().tolist() == [[7.0, 8.0]]


def test_the_normalisation_is_worked_out_once_per_channel_and_sample_size(tmp_path):
    """The first job draws num_point_for_scaler rows and keeps their mean and standard deviation beside the
    decoded channel; a later job with the same sample size uses them (altered here, its model shows it)."""
    channels = write_channels(tmp_path / "planted", rows=2_000)
    hp = BASE | {"num_point_for_scaler": "500", "epochs": "1"}
    train(hp, {"train": channels["train"]}, tmp_path / "first", log=lambda _: None)
    x, _ = read_channel("train", channels["train"])
    (saved,) = x.path.parent.glob("scaler-500.npy")
    mean, std = np.load(saved)
    sample = x.read()[np.sort(np.random.default_rng(0).choice(len(x), 500, replace=False))].astype(np.float64)
    assert np.allclose(mean, sample.mean(axis=0)) and np.allclose(std, sample.std(axis=0))
    assert np.allclose(load_model(tmp_path / "first" / "model.tar.gz").mean, mean)

    np.save(saved, np.stack([mean + 1.0, std]))
    train(hp, {"train": channels["train"]}, tmp_path / "second", log=lambda _: None)
    assert np.allclose(load_model(tmp_path / "second" / "model.tar.gz").mean, mean + 1.0)
    train(hp | {"num_point_for_scaler": "400"}, {"train": channels["train"]}, tmp_path / "third", log=lambda _: None)
    assert sorted(p.name for p in x.path.parent.glob("scaler-*.npy")) == ["scaler-400.npy", "scaler-500.npy"]


# --- request and response formats (the container's inference contract) ---

def test_each_request_format_decodes_to_the_same_rows():
    rows = [[1.5, -2.0, 3.0], [0.0, 4.25, -1.0]]
    bodies = {
        "text/csv": b"1.5,-2,3\n0,4.25,-1\n",
        "text/csv; charset=utf-8": b"1.5,-2,3\r\n\r\n0,4.25,-1",
        "application/json": json.dumps({"instances": [{"features": rows[0]}, {"features": rows[1]}]}).encode(),
        "Application/JSON": json.dumps({"instances": [rows[0], {"data": {"features": {"values": rows[1]}}}]}).encode(),
        "application/jsonlines": b'{"features": [1.5, -2, 3]}\n{"data": {"features": {"keys": [1, 2], '
                                 b'"shape": [3], "values": [4.25, -1]}}}\n',
    }
    for content_type, body in bodies.items():
        assert decode_request(body, content_type, 3).tolist() == rows, content_type


@pytest.mark.parametrize(("body", "content_type", "error", "message"), [
    (b"1,2,3", "text/plain", UnsupportedContentType, "text/plain"),
    (b"1,2,3", "", UnsupportedContentType, "content type"),
    (b"1,2", "text/csv", BadRequest, "record 1 has 2 values; the model expects 3"),
    (b"1,x,3", "text/csv", BadRequest, "numbers only"),
    (b"1,nan,3", "text/csv", BadRequest, "finite"),
    (b"1,1e999,3", "text/csv", BadRequest, "finite"),
    (b"  \n", "text/csv", BadRequest, "empty"),
    (b"\xff\xfe", "text/csv", BadRequest, "UTF-8"),
    (b'{"instances": [{"features": [1, 2]}]}', "application/json", BadRequest, "instance 0 has 2 features"),
    (b'{"instances": [{"features": [1, true, 3]}]}', "application/json", BadRequest, "list of numbers"),
    (b'{"instances": []}', "application/json", BadRequest, "empty"),
    (b'[[1, 2, 3]]', "application/json", BadRequest, "instances"),
    (b'{"instances": [[1, 2, 1e999]]}', "application/json", BadRequest, "finite"),
    (b'{"instances": [[1, 2, 1' + b"0" * 400 + b"]]}", "application/json", BadRequest, "too large"),
    (b"{", "application/json", BadRequest, "not valid JSON"),
    (b'{"features": [1, 2, 3]}\n{"features": [1]}', "application/jsonlines", BadRequest, "line 2 has 1 features"),
    (b'{"data": {"features": {"keys": [5], "values": [1]}}}', "application/jsonlines", BadRequest, "sparse"),
])
def test_a_bad_request_raises_a_typed_error_with_a_message(body, content_type, error, message):
    with pytest.raises(error, match=message):
        decode_request(body, content_type, 3)


def test_responses_follow_the_linear_learner_formats():
    scores, labels = np.array([0.25, 0.75]), np.array([0, 1])
    body, content_type = encode_response(scores, labels, None)
    assert content_type == "application/json"
    assert json.loads(body) == {"predictions": [{"score": 0.25, "predicted_label": 0},
                                                {"score": 0.75, "predicted_label": 1}]}
    body, content_type = encode_response(scores, labels, "application/jsonlines")
    assert content_type == "application/jsonlines"
    assert [json.loads(line) for line in body.decode().splitlines()] == [
        {"score": 0.25, "predicted_label": 0}, {"score": 0.75, "predicted_label": 1}]
    assert encode_response(scores, labels, "text/html, */*;q=0.1")[1] == "application/json"
    with pytest.raises(UnsupportedAccept, match="text/html"):
        encode_response(scores, labels, "text/html")


# --- batch transform ---

def test_batch_transform_writes_one_json_line_per_record_in_order(channels, tmp_path):
    _, model, _ = fit(channels, tmp_path, epochs="2")
    x, _ = planted_data(2500, seed=5)
    source = write_csv(tmp_path / "in" / "test_features.csv", x)
    output = tmp_path / "out" / "test_features.csv.out"
    assert batch_transform(tmp_path / "model" / "model.tar.gz", source, output) == 2500
    lines = output.read_text().splitlines()
    scores, labels = model.predict(x)
    assert len(lines) == 2500
    assert [json.loads(line)["predicted_label"] for line in lines] == labels.tolist()
    assert [json.loads(line)["score"] for line in lines] == pytest.approx(scores.tolist())


def test_batch_transform_of_a_bad_record_names_the_line_and_writes_nothing(channels, tmp_path):
    fit(channels, tmp_path, epochs="1")
    source = tmp_path / "in.csv"
    source.write_text(",".join(["1"] * 605) + "\n" + ",".join(["1"] * 604) + "\n")
    output = tmp_path / "in.csv.out"
    with pytest.raises(TransformError, match=r"in.csv, request starting at line 1: text/csv record 2 has 604"):
        batch_transform(tmp_path / "model" / "model.tar.gz", source, output)
    assert not output.exists() and not list(tmp_path.glob("*.partial"))
