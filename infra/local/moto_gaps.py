"""What moto lacks that the local loop needs, closed in this one place and pinned to moto's version.

- UpdateEndpoint (moto 5.2.5 answers HTTP 500): the deploy Lambda's blue/green update of an endpoint to a new
  endpoint config. Locally the switch is immediate: the endpoint stays InService on the new config (there are
  no instances to bake, so no alarms to watch).
- S3 → EventBridge events all carry the same `id` (moto copies one base message). EventBridge gives every
  event its own id, and at-least-once consumers (the local dispatcher) dedupe on it: every copy of the base
  message gets a fresh id.
- Model package state changes (moto emits no event): every CreateModelPackage and UpdateModelPackage puts a
  "SageMaker Model Package State Change" event, its detail the package as DescribeModelPackage shows it, on the
  default bus, as SageMaker does on AWS: every transition gives one event, in order (approve, reject and
  approve again within a second give three).
- Pipeline executions (moto records them as Succeeded at once and runs nothing; ListPipelineExecutionSteps
  answers HTTP 500): given the stack's state directory, Start/Describe/List/Stop/Retry pipeline executions,
  ListPipelineExecutionSteps and the jobs behind the steps (Describe processing, transform, tuning and training jobs,
  ListTrainingJobsForHyperParameterTuningJob) are answered by `execution_api.py` from the local engine's durable
  records, and a start queues a real run that the stack's runner executes (`pipelines/local/submissions.py`).

`python -m infra.local.moto_gaps -H 127.0.0.1 -p PORT` runs moto's server with the gaps closed (when
$LIVETRAIN_LOCAL_STATE_DIR names the state directory, the executions too, and moto's S3, registry and pipelines
survive a restart: infra/local/moto_persistence.py); `apply()` closes them in-process (for moto's
decorator or threaded server).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sys
import threading
import uuid

PINNED_MOTO = "5.2.5"
STATE_DIR_VARIABLE = "LIVETRAIN_LOCAL_STATE_DIR"
PACKAGE_STATE_CHANGE = "SageMaker Model Package State Change"
_package_changes = threading.Lock()  # a change and its event as one step: events in the order of the changes


class _EventWithFreshId(dict):
    """moto's base event message; each deep copy (one per event sent) gets a new id."""

    def __deepcopy__(self, memo):
        return {**copy.deepcopy(dict(self), memo), "id": str(uuid.uuid4())}


def apply(state_dir: str | None = None) -> None:
    """Add the missing operations to moto's SageMaker backend and its HTTP responses; with `state_dir`, answer
    the pipeline-execution operations from the local engine's records there."""
    import moto
    import moto.events.utils
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    if moto.__version__ != PINNED_MOTO:
        raise RuntimeError(f"infra/local/moto_gaps.py is written for moto {PINNED_MOTO}, not {moto.__version__}: "
                           f"check whether moto now has UpdateEndpoint, then update or remove the patch")

    def update_endpoint(backend: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str) -> str:
        endpoint = backend.endpoints.get(endpoint_name)
        if endpoint is None:
            raise ValidationError(message=f"Could not find endpoint '{endpoint_name}'.")
        try:
            config = backend.describe_endpoint_config(endpoint_config_name)
        except (KeyError, ValidationError):
            raise ValidationError(message=f"Could not find endpoint configuration '{endpoint_config_name}'.") from None
        endpoint.endpoint_config_name = endpoint_config_name
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        endpoint.last_modified_time = utcnow()
        return endpoint.arn

    def update_endpoint_response(response: SageMakerResponse) -> ActionResult:
        arn = response.sagemaker_backend.update_endpoint(
            endpoint_name=response._get_param("EndpointName"),
            endpoint_config_name=response._get_param("EndpointConfigName"))
        return ActionResult({"EndpointArn": arn})

    SageMakerModelBackend.update_endpoint = update_endpoint
    SageMakerResponse.update_endpoint = update_endpoint_response
    if not isinstance(moto.events.utils._BASE_EVENT_MESSAGE, _EventWithFreshId):  # apply() may run twice
        moto.events.utils._BASE_EVENT_MESSAGE = _EventWithFreshId(moto.events.utils._BASE_EVENT_MESSAGE)
        for operation in ("create_model_package", "update_model_package"):
            setattr(SageMakerModelBackend, operation, _announcing(getattr(SageMakerModelBackend, operation)))
    if state_dir:
        _serve_executions(state_dir)


def _announcing(change):
    """A model-package backend call (returning the package's ARN) that then puts the package's state change
    event on the default bus."""
    from moto.events.models import events_backends

    def call(backend, *args, **kwargs) -> str:
        with _package_changes:
            arn = change(backend, *args, **kwargs)
            detail = backend.describe_model_package(arn).gen_response_object()
            events_backends[backend.account_id][backend.region_name].put_events([{
                "Source": "aws.sagemaker", "DetailType": PACKAGE_STATE_CHANGE, "Resources": [arn],
                "Detail": json.dumps(detail, default=_iso_time)}])
        return arn

    return call


def _iso_time(value):
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _serve_executions(state_dir: str) -> None:
    """moto's pipeline-execution handlers replaced by the engine's records (infra/local/execution_api.py)."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ConflictException, ResourceNotFound, ValidationError
    from moto.sagemaker.responses import SageMakerResponse
    from moto.sagemaker.utils import get_pipeline_from_name

    from infra.local.execution_api import Conflict, ExecutionApi, Invalid, NotFound

    api = ExecutionApi(state_dir)

    def answer(call):
        try:
            return ActionResult(call())
        except NotFound as exc:
            raise ResourceNotFound(message=str(exc)) from None
        except Invalid as exc:
            raise ValidationError(message=str(exc)) from None
        except Conflict as exc:
            raise ConflictException(str(exc)) from None

    def engine_job(operation: str, name_parameter: str, call) -> None:
        """The job from the engine's records; a job the engine did not run, from moto's own records (if moto
        has the operation)."""
        moto_handler = getattr(SageMakerResponse, operation, None)

        def handler(response: SageMakerResponse) -> ActionResult:
            name = response._get_param(name_parameter)
            found = call(response, name)
            if found is not None:
                return ActionResult(found)
            if moto_handler is None:
                raise ResourceNotFound(message=f"Could not find job '{name}'.")
            return moto_handler(response)

        setattr(SageMakerResponse, operation, handler)

    def start(response: SageMakerResponse) -> ActionResult:
        pipeline = get_pipeline_from_name(response.sagemaker_backend.pipelines, response._get_param("PipelineName"))
        pipeline.last_execution_time = utcnow()
        return answer(lambda: api.start(
            pipeline_name=pipeline.pipeline_name, pipeline_arn=pipeline.arn,
            definition_json=pipeline.pipeline_definition, parameters=response._get_param("PipelineParameters"),
            display_name=response._get_param("PipelineExecutionDisplayName"),
            description=response._get_param("PipelineExecutionDescription"),
            client_token=response._get_param("ClientRequestToken")))

    def describe(response: SageMakerResponse) -> ActionResult:
        return answer(lambda: api.describe(response._get_param("PipelineExecutionArn")))

    def definition(response: SageMakerResponse) -> ActionResult:
        return answer(lambda: api.definition(response._get_param("PipelineExecutionArn")))

    def paging(response: SageMakerResponse) -> dict:
        """A list call's SortOrder, MaxResults and NextToken."""
        return {"sort_order": response._get_param("SortOrder"), "max_results": response._get_param("MaxResults"),
                "next_token": response._get_param("NextToken")}

    def list_executions(response: SageMakerResponse) -> ActionResult:
        name = response._get_param("PipelineName")
        get_pipeline_from_name(response.sagemaker_backend.pipelines, name)
        return answer(lambda: api.list(name, sort_by=response._get_param("SortBy"), **paging(response)))

    def list_steps(response: SageMakerResponse) -> ActionResult:
        return answer(lambda: api.steps(response._get_param("PipelineExecutionArn"), **paging(response)))

    def stop(response: SageMakerResponse) -> ActionResult:
        return answer(lambda: api.stop(response._get_param("PipelineExecutionArn")))

    def retry(response: SageMakerResponse) -> ActionResult:
        return answer(lambda: api.retry(response._get_param("PipelineExecutionArn"),
                                        response._get_param("ClientRequestToken")))

    SageMakerResponse.start_pipeline_execution = start
    SageMakerResponse.describe_pipeline_execution = describe
    SageMakerResponse.describe_pipeline_definition_for_execution = definition
    SageMakerResponse.list_pipeline_executions = list_executions
    SageMakerResponse.list_pipeline_execution_steps = list_steps
    SageMakerResponse.stop_pipeline_execution = stop
    SageMakerResponse.retry_pipeline_execution = retry
    engine_job("describe_processing_job", "ProcessingJobName", lambda _, name: api.describe_processing_job(name))
    engine_job("describe_transform_job", "TransformJobName", lambda _, name: api.describe_transform_job(name))
    engine_job("describe_hyper_parameter_tuning_job", "HyperParameterTuningJobName",
               lambda _, name: api.describe_tuning_job(name))
    engine_job("describe_training_job", "TrainingJobName", lambda _, name: api.describe_training_job(name))
    engine_job("list_training_jobs_for_hyper_parameter_tuning_job", "HyperParameterTuningJobName",
               lambda response, name: api.list_training_jobs(
                   name, sort_by=response._get_param("SortBy"), status_equals=response._get_param("StatusEquals"),
                   **paging(response)))


def main() -> None:
    state_dir = os.environ.get(STATE_DIR_VARIABLE)
    apply(state_dir)
    if state_dir:
        from infra.local.moto_persistence import persist

        print(f"moto: replayed {persist(state_dir)} recorded request(s)", file=sys.stderr, flush=True)
    from moto.server import main as moto_server

    moto_server(sys.argv[1:])


if __name__ == "__main__":
    main()
