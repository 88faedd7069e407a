"""The operations infra/local/moto_gaps.py adds to moto, through the local stack's moto daemon."""

import json

import botocore.exceptions
import pytest

from infra.local.services import start_moto
from pipelines.local.records import ExecutionStore
from pipelines.local.submissions import Submissions


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("moto")


@pytest.fixture(scope="module")
def moto_daemon(state_dir):
    moto = start_moto(state_dir)
    yield moto
    moto.stop()


def client(moto, service: str):
    import boto3

    return boto3.client(service, endpoint_url=moto.url, region_name="us-east-1")


@pytest.fixture
def sagemaker(moto_daemon):
    return client(moto_daemon, "sagemaker")


def test_every_s3_event_has_its_own_id(moto_daemon):
    s3, events, sqs = (client(moto_daemon, name) for name in ("s3", "events", "sqs"))
    s3.create_bucket(Bucket="events-bucket")
    s3.put_bucket_notification_configuration(Bucket="events-bucket",
                                             NotificationConfiguration={"EventBridgeConfiguration": {}})
    queue = sqs.create_queue(QueueName="all-s3-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-s3", EventPattern=json.dumps({"source": ["aws.s3"], "detail-type": ["Object Created"]}))
    events.put_targets(Rule="all-s3", Targets=[{"Id": "queue", "Arn": arn}])
    for key in ("a.manifest", "b.manifest", "c.manifest"):
        s3.put_object(Bucket="events-bucket", Key=key, Body=b"[]")
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=5)["Messages"]
    ids = [json.loads(message["Body"])["id"] for message in messages]
    assert len(ids) == 3 and len(set(ids)) == 3


def _config(sagemaker, name: str, model: str) -> None:
    sagemaker.create_model(ModelName=model, ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
                           PrimaryContainer={"Image": "img", "ModelDataUrl": f"s3://b/{model}.tar.gz"})
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])


def test_update_endpoint_switches_to_the_new_config(sagemaker):
    _config(sagemaker, "config-1", "model-1")
    _config(sagemaker, "config-2", "model-2")
    sagemaker.create_endpoint(EndpointName="live", EndpointConfigName="config-1")
    arn = sagemaker.update_endpoint(EndpointName="live", EndpointConfigName="config-2",
                                    DeploymentConfig={"BlueGreenUpdatePolicy": {
                                        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE",
                                                                        "WaitIntervalInSeconds": 0}}})["EndpointArn"]
    endpoint = sagemaker.describe_endpoint(EndpointName="live")
    assert endpoint["EndpointArn"] == arn
    assert (endpoint["EndpointConfigName"], endpoint["EndpointStatus"]) == ("config-2", "InService")


def test_update_endpoint_names_what_is_missing(sagemaker):
    with pytest.raises(botocore.exceptions.ClientError, match="Could not find endpoint 'nowhere'"):
        sagemaker.update_endpoint(EndpointName="nowhere", EndpointConfigName="config-1")
    _config(sagemaker, "config-3", "model-3")
    sagemaker.create_endpoint(EndpointName="other", EndpointConfigName="config-3")
    with pytest.raises(botocore.exceptions.ClientError, match="Could not find endpoint configuration 'missing'"):
        sagemaker.update_endpoint(EndpointName="other", EndpointConfigName="missing")


DEFINITION = {"Version": "2020-12-01", "Steps": [],
              "Parameters": [{"Name": "InputBucket", "Type": "String"},
                             {"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}]}


@pytest.fixture(scope="module")
def pipeline(moto_daemon):
    sagemaker = client(moto_daemon, "sagemaker")
    sagemaker.create_pipeline(PipelineName="api", PipelineDefinition=json.dumps(DEFINITION),
                              RoleArn="arn:aws:iam::123456789012:role/r")
    return "api"


def start(sagemaker, token: str, **extra) -> str:
    return sagemaker.start_pipeline_execution(
        PipelineName="api", ClientRequestToken=token.ljust(32, "0"),
        PipelineParameters=[{"Name": "InputBucket", "Value": "b"}, {"Name": "Threshold", "Value": "0.7"}],
        **extra)["PipelineExecutionArn"]


def test_start_pipeline_execution_queues_a_run_of_the_stored_definition(sagemaker, pipeline, state_dir):
    arn = start(sagemaker, "token-1", PipelineExecutionDisplayName="first-run")
    assert start(sagemaker, "token-1", PipelineExecutionDisplayName="first-run") == arn  # idempotent by token
    execution_id = arn.rsplit("/", 1)[-1]
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert (described["PipelineExecutionDisplayName"], described["PipelineExecutionStatus"]) == \
        ("first-run", "Executing")  # nothing runs it here: the local stack's runner takes the queue
    assert "FailureReason" not in described
    record = ExecutionStore(state_dir).load(execution_id)
    assert record["Parameters"] == {"InputBucket": "b", "Threshold": "0.7"}
    assert json.loads((state_dir / "executions" / execution_id / "definition.json").read_text()) == DEFINITION
    assert list((state_dir / "queue").glob(f"*-{execution_id}.json"))

    second = start(sagemaker, "token-2")
    listed = sagemaker.list_pipeline_executions(PipelineName="api", SortBy="CreationTime", SortOrder="Descending",
                                                MaxResults=1)
    assert [s["PipelineExecutionArn"] for s in listed["PipelineExecutionSummaries"]] == [second]
    rest = sagemaker.list_pipeline_executions(PipelineName="api", SortBy="CreationTime", SortOrder="Descending",
                                              NextToken=listed["NextToken"])["PipelineExecutionSummaries"]
    assert arn in [s["PipelineExecutionArn"] for s in rest] and second not in [s["PipelineExecutionArn"] for s in rest]


def test_start_pipeline_execution_refuses_what_the_definition_does_not_declare(sagemaker, pipeline):
    with pytest.raises(botocore.exceptions.ClientError, match="unknown parameter 'Nope'"):
        sagemaker.start_pipeline_execution(PipelineName="api", PipelineParameters=[{"Name": "Nope", "Value": "1"}])
    with pytest.raises(botocore.exceptions.ClientError, match="Threshold"):
        sagemaker.start_pipeline_execution(PipelineName="api", PipelineParameters=[
            {"Name": "InputBucket", "Value": "b"}, {"Name": "Threshold", "Value": "high"}])
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFound"):
        sagemaker.describe_pipeline_execution(
            PipelineExecutionArn="arn:aws:sagemaker:us-east-1:123456789012:pipeline/api/execution/nothing")


def test_execution_steps_carry_sagemakers_metadata(sagemaker, pipeline, state_dir):
    arn = start(sagemaker, "token-steps")
    store = ExecutionStore(state_dir)
    record = store.load(arn)
    job = "arn:aws:sagemaker:us-east-1:123456789012:processing-job/prep"
    record["Steps"] = {
        "Prep": {"StepName": "Prep", "StepType": "Processing", "StepStatus": "Succeeded",
                 "StartTime": "2026-12-04T10:00:00.000Z", "EndTime": "2026-12-04T10:00:05.000Z", "AttemptCount": 1,
                 "Properties": {"ProcessingJobArn": job}},
        "Gate": {"StepName": "Gate", "StepType": "Condition", "StepStatus": "Succeeded",
                 "StartTime": "2026-12-04T10:00:06.000Z", "EndTime": "2026-12-04T10:00:06.100Z",
                 "Properties": {"Outcome": False}},
        "Explain": {"StepName": "Explain", "StepType": "Fail", "StepStatus": "Failed",
                    "StartTime": "2026-12-04T10:00:07.000Z", "EndTime": "2026-12-04T10:00:07.100Z",
                    "FailureReason": "not better than the baseline"},
        "Register": {"StepName": "Register", "StepType": "RegisterModel", "StepStatus": "NotExecuted"}}
    record.update(PipelineExecutionStatus="Failed", FailureReason="not better than the baseline")
    store.save(record)

    steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    assert [(s["StepName"], s["StepStatus"], s["Metadata"]) for s in steps] == [
        ("Explain", "Failed", {"Fail": {"ErrorMessage": "not better than the baseline"}}),
        ("Gate", "Succeeded", {"Condition": {"Outcome": "false"}}),
        ("Prep", "Succeeded", {"ProcessingJob": {"Arn": job}})]
    assert steps[0]["FailureReason"] == "not better than the baseline"
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert (described["PipelineExecutionStatus"], described["FailureReason"]) == \
        ("Failed", "not better than the baseline")
    (summary,) = [s for s in sagemaker.list_pipeline_executions(PipelineName="api")["PipelineExecutionSummaries"]
                  if s["PipelineExecutionArn"] == arn]
    assert summary["PipelineExecutionFailureReason"] == "not better than the baseline"


def queue_entry(state_dir, arn: str) -> list:
    return [json.loads(path.read_text()) for path in (state_dir / "queue").glob(f"*-{arn.rsplit('/', 1)[-1]}.json")]


def test_stop_pipeline_execution_stops_a_queued_run_at_once_and_asks_a_running_one(sagemaker, pipeline, state_dir):
    queued = start(sagemaker, "token-stop-queued")
    sagemaker.stop_pipeline_execution(PipelineExecutionArn=queued)
    assert sagemaker.describe_pipeline_execution(PipelineExecutionArn=queued)["PipelineExecutionStatus"] == "Stopped"
    assert queue_entry(state_dir, queued) == []  # it never starts
    with pytest.raises(botocore.exceptions.ClientError, match=r"ConflictException.*only an Executing one"):
        sagemaker.stop_pipeline_execution(PipelineExecutionArn=queued)

    running = start(sagemaker, "token-stop-running")
    assert Submissions(state_dir).claim(running.rsplit("/", 1)[-1])  # what the stack's runner does first
    sagemaker.stop_pipeline_execution(PipelineExecutionArn=running)
    assert sagemaker.describe_pipeline_execution(PipelineExecutionArn=running)["PipelineExecutionStatus"] == \
        "Stopping"  # until the engine reaches a step boundary (test_local_engine)
    assert ExecutionStore(state_dir).stop_requested(running.rsplit("/", 1)[-1])


def test_retry_pipeline_execution_queues_a_failed_run_again(sagemaker, pipeline, state_dir):
    arn = start(sagemaker, "token-retry")
    with pytest.raises(botocore.exceptions.ClientError, match=r"ConflictException.*only a Failed one"):
        sagemaker.retry_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="r" * 32)
    submissions = Submissions(state_dir)
    execution_id = arn.rsplit("/", 1)[-1]
    assert submissions.claim(execution_id)
    submissions.fail(execution_id, "step Prep failed: no batch")
    submissions.done(execution_id)

    for _ in range(2):  # the same client token: one retry
        assert sagemaker.retry_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="r" * 32)[
            "PipelineExecutionArn"] == arn
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["PipelineExecutionStatus"] == "Executing" and "FailureReason" not in described
    assert queue_entry(state_dir, arn) == [{"PipelineExecutionId": execution_id, "Claimed": False}]
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFound"):
        sagemaker.retry_pipeline_execution(PipelineExecutionArn=f"{arn[:-12]}nothinghere0", ClientRequestToken="x" * 32)


PREFIX = "arn:aws:sagemaker:us-east-1:123456789012"
SUMMARIES = [  # two training jobs of tuning job "tune-abc", best first, as pipelines/local/steps/tuning.py records them
    {"TrainingJobName": "tune-abc-002-bbbb", "TrainingJobArn": f"{PREFIX}:training-job/tune-abc-002-bbbb",
     "TuningJobName": "tune-abc", "CreationTime": "2026-12-04T10:01:00+00:00",
     "TrainingStartTime": "2026-12-04T10:01:00+00:00", "TrainingEndTime": "2026-12-04T10:01:30+00:00",
     "TrainingJobStatus": "Completed", "TunedHyperParameters": {"wd": "0.1"}, "ObjectiveStatus": "Succeeded",
     "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "validation:f1", "Value": 0.7},
     "FinalMetricDataList": [{"MetricName": "validation:f1", "Value": 0.7, "Timestamp": "2026-12-04T10:01:30+00:00"}]},
    {"TrainingJobName": "tune-abc-001-aaaa", "TrainingJobArn": f"{PREFIX}:training-job/tune-abc-001-aaaa",
     "TuningJobName": "tune-abc", "CreationTime": "2026-12-04T10:00:00+00:00",
     "TrainingStartTime": "2026-12-04T10:00:00+00:00", "TrainingEndTime": "2026-12-04T10:00:20+00:00",
     "TrainingJobStatus": "Failed", "TunedHyperParameters": {"wd": "9"}, "ObjectiveStatus": "Failed",
     "FailureReason": "diverged", "FinalMetricDataList": []}]


def test_the_jobs_behind_the_steps_are_describable(sagemaker, pipeline, state_dir):
    arn = start(sagemaker, "token-jobs")
    store = ExecutionStore(state_dir)
    record = store.load(arn)
    definition = {"AlgorithmSpecification": {"TrainingImage": "linear-learner", "TrainingInputMode": "File"},
                  "RoleArn": "arn:aws:iam::123456789012:role/r", "StaticHyperParameters": {"epochs": "5"},
                  "OutputDataConfig": {"S3OutputPath": "s3://b/models/"},
                  "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
                  "StoppingCondition": {"MaxRuntimeInSeconds": 600}}
    record["Steps"] = {
        "Prep": {"StepName": "Prep", "StepType": "Processing", "StepStatus": "Succeeded", "JobName": "prep-abc",
                 "StartTime": "2026-12-04T09:59:00.000Z", "EndTime": "2026-12-04T09:59:30.000Z",
                 "Properties": {"ProcessingJobName": "prep-abc",
                                "ProcessingJobArn": f"{PREFIX}:processing-job/prep-abc",
                                "AppSpecification": {"ImageUri": "sklearn"}, "RoleArn": definition["RoleArn"],
                                "ProcessingJobStatus": "Completed", "PropertyFiles": {"R": {}}}},
        "Check": {"StepName": "Check", "StepType": "Processing", "StepStatus": "Failed", "JobName": "Check-abc",
                  "StartTime": "2026-12-04T10:02:00.000Z", "EndTime": "2026-12-04T10:02:01.000Z",
                  "FailureReason": "no test slice"},
        "Score": {"StepName": "Score", "StepType": "Transform", "StepStatus": "Succeeded", "JobName": "Score-abc",
                  "StartTime": "2026-12-04T10:01:50.000Z", "EndTime": "2026-12-04T10:01:51.000Z",
                  "Properties": {"ModelName": "m", "TransformJobName": "Score-abc",
                                 "TransformJobArn": f"{PREFIX}:transform-job/score-abc",
                                 "TransformInput": {"DataSource": {"S3DataSource": {
                                     "S3DataType": "S3Prefix", "S3Uri": "s3://b/test.csv"}}},
                                 "TransformOutput": {"S3OutputPath": "s3://b/out"},
                                 "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
                                 "TransformJobStatus": "Completed"}},
        "Tune": {"StepName": "Tune", "StepType": "Tuning", "StepStatus": "Succeeded", "JobName": "tune-abc",
                 "StartTime": "2026-12-04T10:00:00.000Z", "EndTime": "2026-12-04T10:01:40.000Z",
                 "Properties": {"HyperParameterTuningJobName": "tune-abc",
                                "HyperParameterTuningJobArn": f"{PREFIX}:hyper-parameter-tuning-job/tune-abc",
                                "HyperParameterTuningJobStatus": "Completed", "TrainingJobDefinition": definition,
                                "CreationTime": "2026-12-04T10:00:00+00:00", "BestTrainingJob": SUMMARIES[0],
                                "TrainingJobSummaries": SUMMARIES}}}
    store.save(record)

    processing = sagemaker.describe_processing_job(ProcessingJobName="prep-abc")
    assert (processing["ProcessingJobStatus"], processing["AppSpecification"], processing["ProcessingJobArn"]) == \
        ("Completed", {"ImageUri": "sklearn"}, f"{PREFIX}:processing-job/prep-abc")
    assert processing["ProcessingEndTime"] > processing["ProcessingStartTime"]
    failed = sagemaker.describe_processing_job(ProcessingJobName="Check-abc")
    assert (failed["ProcessingJobStatus"], failed["FailureReason"], failed["ProcessingJobArn"]) == \
        ("Failed", "no test slice", f"{PREFIX}:processing-job/check-abc")

    transform = sagemaker.describe_transform_job(TransformJobName="score-abc")  # names match regardless of case
    assert (transform["TransformJobStatus"], transform["ModelName"], transform["TransformOutput"]) == \
        ("Completed", "m", {"S3OutputPath": "s3://b/out"})
    assert transform["TransformEndTime"] > transform["TransformStartTime"]

    tuning = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-abc")
    assert tuning["HyperParameterTuningJobStatus"] == "Completed"
    assert tuning["BestTrainingJob"]["TrainingJobName"] == "tune-abc-002-bbbb"

    def listed(**options) -> list[str]:
        return [job["TrainingJobName"] for job in sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="tune-abc", **options)["TrainingJobSummaries"]]

    assert listed() == ["tune-abc-001-aaaa", "tune-abc-002-bbbb"]  # by Name, ascending
    assert listed(StatusEquals="Completed") == listed(SortBy="FinalObjectiveMetricValue") == ["tune-abc-002-bbbb"]
    page = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-abc", SortBy="CreationTime", SortOrder="Descending", MaxResults=1)
    assert [job["TrainingJobName"] for job in page["TrainingJobSummaries"]] == ["tune-abc-002-bbbb"]
    assert listed(SortBy="CreationTime", SortOrder="Descending", NextToken=page["NextToken"]) == ["tune-abc-001-aaaa"]

    training = sagemaker.describe_training_job(TrainingJobName="tune-abc-002-bbbb")
    assert training["TuningJobArn"] == f"{PREFIX}:hyper-parameter-tuning-job/tune-abc"
    assert training["HyperParameters"] == {"epochs": "5", "wd": "0.1"}
    assert training["ModelArtifacts"]["S3ModelArtifacts"] == "s3://b/models/tune-abc-002-bbbb/output/model.tar.gz"
    assert [(m["MetricName"], m["Value"]) for m in training["FinalMetricDataList"]] == [("validation:f1", 0.7)]
    assert sagemaker.describe_training_job(TrainingJobName="tune-abc-001-aaaa")["FailureReason"] == "diverged"
    for call in (lambda: sagemaker.describe_training_job(TrainingJobName="unknown"),
                 lambda: sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
                     HyperParameterTuningJobName="unknown")):
        with pytest.raises(botocore.exceptions.ClientError):
            call()


def test_the_journal_keeps_writes_only():
    """Reads, SQS receives/deletes and execution starts are not replayed after a restart; writes are."""
    from infra.local.moto_persistence import mutates

    def signed(service: str) -> dict:
        return {"Authorization": f"AWS4-HMAC-SHA256 Credential=local/20261204/us-east-1/{service}/aws4_request"}

    def target(name: str) -> dict:
        return {"X-Amz-Target": name, **signed("x")}

    assert [mutates(method, signed("s3")) for method in ("PUT", "POST", "DELETE", "GET", "HEAD")] == [
        True, True, True, False, False]
    assert [mutates("POST", target(name)) for name in (
        "SageMaker.CreateModelPackage", "SageMaker.UpdateModelPackage", "SageMaker.UpdatePipeline",
        "secretsmanager.CreateSecret", "SageMaker.DescribePipeline", "SageMaker.StartPipelineExecution",
        "SageMaker.RetryPipelineExecution", "AmazonSQS.ReceiveMessage", "AmazonSQS.DeleteMessage",
        "AWSEvents.PutRule")] == [True, True, True, False, False, False, False, False, False, False]
    assert not mutates("POST", signed("sqs"))  # SQS's query protocol: no target header
