"""The local endpoint through boto3's sagemaker-runtime client: formats, errors, the records resolver
against moto (including a blue/green switch to a new model), fuzzing for 5xx, and `livetrain serve`."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.planted_data import write_channels
from pipelines.local.algorithms.linear_learner import load_model, train
from pipelines.local.endpoint import MAX_PAYLOAD_BYTES, EndpointServer, RecordsResolver, StaticResolver

NAME = "livetrain-endpoint"
LIVETRAIN = Path(sys.executable).parent / "livetrain"


def train_model(directory: Path, seed: int) -> Path:
    channels = write_channels(directory / "data", rows=1500, seed=seed)
    train({"predictor_type": "binary_classifier", "epochs": "2", "num_models": "1"}, channels, directory / "model",
          log=lambda _: None)
    return directory / "model" / "model.tar.gz"


@pytest.fixture(scope="module")
def model_tar(tmp_path_factory) -> Path:
    return train_model(tmp_path_factory.mktemp("endpoint-model"), seed=2)


@pytest.fixture(scope="module")
def server(model_tar):
    with EndpointServer(StaticResolver({NAME: str(model_tar)})) as running:
        yield running


def runtime(url: str):
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1")


def rows(count: int, seed: int = 9) -> np.ndarray:
    """Request rows shaped like the features: random walks over 605 lags."""
    return np.random.default_rng(seed).normal(size=(count, 605)).cumsum(axis=1).round(3)


def csv_body(features: np.ndarray) -> str:
    return "\n".join(",".join(map(repr, row)) for row in features.tolist())


@pytest.mark.parametrize(("content_type", "encode"), [
    ("text/csv", csv_body),
    ("application/json", lambda x: json.dumps({"instances": [{"features": row} for row in x.tolist()]})),
    ("application/jsonlines", lambda x: "\n".join(json.dumps({"features": row}) for row in x.tolist())),
])
@pytest.mark.parametrize("accept", [None, "application/json", "application/jsonlines"])
def test_invoke_endpoint_answers_each_content_type(server, model_tar, content_type, encode, accept):
    features = rows(3)
    extra = {"Accept": accept} if accept else {}
    response = runtime(server.url).invoke_endpoint(EndpointName=NAME, ContentType=content_type,
                                                   Body=encode(features), **extra)
    body = response["Body"].read().decode()
    if accept == "application/jsonlines":
        assert response["ContentType"] == "application/jsonlines"
        predictions = [json.loads(line) for line in body.splitlines()]
    else:
        assert response["ContentType"] == "application/json"
        predictions = json.loads(body)["predictions"]
    scores, labels = load_model(model_tar).predict(features)
    assert [p["score"] for p in predictions] == pytest.approx(scores.tolist())
    assert [p["predicted_label"] for p in predictions] == labels.tolist()
    assert response["InvokedProductionVariant"] == "AllTraffic"


@pytest.mark.parametrize(("name", "content_type", "accept", "body", "status", "message"), [
    (NAME, "text/plain", None, "1,2", 415, "content type 'text/plain' is not supported"),
    (NAME, "text/csv", None, "1,2", 400, "record 1 has 2 values; the model expects 605"),
    (NAME, "text/csv", None, ",".join(["a"] * 605), 400, "numbers only"),
    (NAME, "application/json", None, "{}", 400, "instances"),
    (NAME, "text/csv", "text/html", csv_body(rows(1)), 406, "accept type 'text/html'"),
    ("no-such-endpoint", "text/csv", None, csv_body(rows(1)), 404, "Endpoint no-such-endpoint not found"),
    (NAME, "text/csv", None, "0" + ",0" * (MAX_PAYLOAD_BYTES // 2), 413, "larger than 6291456 bytes"),
])
def test_bad_requests_get_4xx_with_a_json_message(server, name, content_type, accept, body, status, message):
    extra = {"Accept": accept} if accept else {}
    with pytest.raises(ClientError) as caught:
        runtime(server.url).invoke_endpoint(EndpointName=name, ContentType=content_type, Body=body, **extra)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error["Error"]["Code"] == "ValidationError"
    assert message in error["Error"]["Message"]


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("POST", f"/endpoints/{NAME}/invocations")
    for header, value in (("Content-Type", "text/csv"), ("Content-Length", str(10 * 1024**3))):
        connection.putheader(header, value)
    connection.endheaders()  # and not a byte of the 10 GiB
    response = connection.getresponse()
    assert response.status == 413
    assert "larger than 6291456 bytes" in json.loads(response.read())["message"]
    connection.close()


def test_a_connection_that_never_finishes_its_headers_is_closed(model_tar):
    with EndpointServer(StaticResolver({NAME: str(model_tar)}), header_timeout_s=0.5) as running, \
            socket.create_connection(("127.0.0.1", running.port), timeout=10) as connection:
        connection.sendall(f"POST /endpoints/{NAME}/invocations HTTP/1.1\r\nHost: x\r\n".encode())
        while connection.recv(1024):  # the server closes it (a 10 s socket timeout raises instead)
            pass


def test_the_container_contract_ping_and_invocations(server, model_tar):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/ping")
    ping = connection.getresponse()
    assert (ping.status, ping.read()) == (200, b"")
    features = rows(2)
    connection.request("POST", "/invocations", body=csv_body(features), headers={"Content-Type": "text/csv"})
    reply = connection.getresponse()
    assert reply.status == 200
    scores = [p["score"] for p in json.loads(reply.read())["predictions"]]
    assert scores == pytest.approx(load_model(model_tar).predict(features)[0].tolist())


def create_endpoint(sagemaker, name: str, suffix: str, model_container: dict) -> None:
    sagemaker.create_model(ModelName=f"model-{suffix}", PrimaryContainer=model_container,
                           ExecutionRoleArn="arn:aws:iam::123456789012:role/livetrain")
    sagemaker.create_endpoint_config(EndpointConfigName=f"config-{suffix}", ProductionVariants=[{
        "VariantName": f"variant-{suffix}", "ModelName": f"model-{suffix}", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"config-{suffix}")


def test_records_resolver_follows_the_endpoint_to_a_new_model(aws, model_tar, tmp_path):
    s3, sagemaker = aws.client("s3"), aws.client("sagemaker")
    s3.create_bucket(Bucket="models")
    second_tar = train_model(tmp_path, seed=3)
    s3.upload_file(str(model_tar), "models", "first/model.tar.gz")
    s3.upload_file(str(second_tar), "models", "second/model.tar.gz")
    package = sagemaker.create_model_package(
        ModelPackageName="livetrain-second", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": "linear-learner:1",
                                                "ModelDataUrl": "s3://models/second/model.tar.gz"}],
                                "SupportedContentTypes": ["text/csv"],
                                "SupportedResponseMIMETypes": ["application/json"]})
    create_endpoint(sagemaker, NAME, "first", {"Image": "linear-learner:1",
                                               "ModelDataUrl": "s3://models/first/model.tar.gz"})
    features = rows(4)
    resolver = RecordsResolver(sagemaker, s3, recheck_seconds=0)
    with EndpointServer(resolver) as running:
        client = runtime(running.url)

        def scores() -> tuple[list[float], str]:
            response = client.invoke_endpoint(EndpointName=NAME, ContentType="text/csv", Body=csv_body(features))
            return [p["score"] for p in json.loads(response["Body"].read())["predictions"]], \
                response["InvokedProductionVariant"]

        assert scores() == (pytest.approx(load_model(model_tar).predict(features)[0].tolist()), "variant-first")
        # Blue/green: the endpoint now points at a config whose model comes from the package.
        sagemaker.delete_endpoint(EndpointName=NAME)
        create_endpoint(sagemaker, NAME, "second", {"ModelPackageName": package["ModelPackageArn"]})
        assert scores() == (pytest.approx(load_model(second_tar).predict(features)[0].tolist()), "variant-second")
        with pytest.raises(ClientError) as caught:
            client.invoke_endpoint(EndpointName="missing", ContentType="text/csv", Body=csv_body(features))
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
CONTENT_TYPES = st.one_of(st.sampled_from(["text/csv", "application/json", "application/jsonlines",
                                           "text/csv; charset=utf-8", "APPLICATION/JSON", ""]), HEADER_TEXT)
ACCEPTS = st.one_of(st.none(), st.sampled_from(["application/json", "application/jsonlines", "*/*"]), HEADER_TEXT)
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30), st.booleans(),
                    st.text(max_size=3), st.none())
JSON_VALUES = st.recursive(NUMBERS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(["features", "data", "values", "keys", "shape",
                                                              "instances"]), inner, max_size=3), max_leaves=12)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.lists(st.lists(NUMBERS, min_size=603, max_size=606), max_size=2).map(
        lambda rs: "\n".join(",".join(map(str, r)) for r in rs).encode()),
    JSON_VALUES.map(lambda v: json.dumps({"instances": v}).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.lists(st.floats(-1e6, 1e6), min_size=605, max_size=605).map(
        lambda r: json.dumps({"instances": [{"features": r}]}).encode()),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(path=st.sampled_from([f"/endpoints/{NAME}/invocations", "/invocations", "/endpoints/x/invocations",
                             "/ping", "/endpoints", "/nothing"]),
       method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
       content_type=CONTENT_TYPES, accept=ACCEPTS, body=BODIES)
def test_fuzzed_requests_never_get_a_5xx(server, path, method, content_type, accept, body):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept is not None else {})}
    connection.request(method, path, body=body, headers=headers)
    reply = connection.getresponse()
    payload = reply.read()
    connection.close()
    assert reply.status < 500, payload
    if reply.status >= 400:
        assert json.loads(payload)["message"]


def test_livetrain_serve_serves_a_model_until_terminated(model_tar):
    process = subprocess.Popen([str(LIVETRAIN), "serve", "--model-data", str(model_tar), "--port", "0",
                                "--endpoint-name", "cli-endpoint"], stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stderr.readline()
        assert banner.startswith("Serving"), banner
        url = banner.split(" at ", 1)[1].split(" ", 1)[0]
        response = runtime(url).invoke_endpoint(EndpointName="cli-endpoint", ContentType="text/csv",
                                                Body=csv_body(rows(1)))
        assert len(json.loads(response["Body"].read())["predictions"]) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert "Stopped." in process.stderr.read()


def test_livetrain_serve_refuses_a_missing_model_in_one_line(run_cli, tmp_path):
    result = run_cli("serve", "--model-data", tmp_path / "missing.tar.gz", "--port", "0")
    assert result.returncode == 2
    assert result.stderr.startswith("livetrain: error: cannot load --model-data")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_taken_port_is_refused_in_one_line(server, run_cli, model_tar):
    started = time.monotonic()
    result = run_cli("serve", "--model-data", model_tar, "--port", server.port)
    assert result.returncode == 2 and time.monotonic() - started < 60
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr


def test_data_capture_as_the_deploy_lambda_configures_it_lands_in_s3_in_sagemakers_layout(aws, model_tar):
    from lambdas.deploy_on_approval import DeployConfig, data_capture_config

    s3, sagemaker = aws.client("s3"), aws.client("sagemaker")
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(model_tar), "models", "first/model.tar.gz")
    sagemaker.create_model(ModelName="model-c", ExecutionRoleArn="arn:aws:iam::123456789012:role/livetrain",
                           PrimaryContainer={"Image": "linear-learner:1",
                                             "ModelDataUrl": "s3://models/first/model.tar.gz"})
    capture = data_capture_config(DeployConfig("e", "g", "r", data_capture_uri="s3://models/livetrain/datacapture/"))
    sagemaker.create_endpoint_config(EndpointConfigName="config-c", DataCaptureConfig=capture, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "model-c", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sagemaker.create_endpoint(EndpointName=NAME, EndpointConfigName="config-c")
    features = rows(1)
    with EndpointServer(RecordsResolver(sagemaker, s3)) as running:
        client = runtime(running.url)
        answers = [client.invoke_endpoint(EndpointName=NAME, ContentType="text/csv", Body=csv_body(features),
                                          **({"InferenceId": inference_id} if inference_id else {}))["Body"].read()
                   for inference_id in ("trade-1", "trade-2", None)]
    objects = s3.list_objects_v2(Bucket="models", Prefix="livetrain/datacapture/")["Contents"]
    assert len(objects) == 1
    parts = objects[0]["Key"].split("/")
    assert parts[:4] == ["livetrain", "datacapture", NAME, "AllTraffic"] and len(parts) == 9  # …/yyyy/mm/dd/hh/file
    assert parts[-1].endswith(".jsonl")
    lines = [json.loads(line) for line in s3.get_object(Bucket="models", Key=objects[0]["Key"])["Body"].iter_lines()]
    assert [line["eventMetadata"].get("inferenceId") for line in lines] == ["trade-1", "trade-2", None]
    first = lines[0]["captureData"]
    assert first["endpointInput"] == {"observedContentType": "text/csv", "mode": "INPUT",
                                      "data": csv_body(features), "encoding": "CSV"}
    assert first["endpointOutput"]["encoding"] == "JSON" and first["endpointOutput"]["data"] == answers[0].decode()
    assert lines[0]["eventVersion"] == "0" and lines[0]["eventMetadata"]["inferenceTime"].endswith("Z")
