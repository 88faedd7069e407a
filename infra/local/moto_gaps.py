"""What moto lacks that the local loop needs, closed in this one place and pinned to moto's version.

- UpdateEndpoint (moto 5.2.5 answers HTTP 500): the deploy Lambda's blue/green update of an endpoint to a new
  endpoint config. Locally the switch is immediate: the endpoint stays InService on the new config (there are
  no instances to bake, so no alarms to watch).
- S3 → EventBridge events all carry the same `id` (moto copies one base message). EventBridge gives every
  event its own id, and at-least-once consumers (the local dispatcher) dedupe on it: every copy of the base
  message gets a fresh id.

`python -m infra.local.moto_gaps -H 127.0.0.1 -p PORT` runs moto's server with the gaps closed; `apply()`
closes them in-process (for moto's decorator or threaded server).
"""

from __future__ import annotations

import copy
import sys
import uuid

PINNED_MOTO = "5.2.5"


class _EventWithFreshId(dict):
    """moto's base event message; each deep copy (one per event sent) gets a new id."""

    def __deepcopy__(self, memo):
        return {**copy.deepcopy(dict(self), memo), "id": str(uuid.uuid4())}


def apply() -> None:
    """Add the missing operations to moto's SageMaker backend and its HTTP responses."""
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
    moto.events.utils._BASE_EVENT_MESSAGE = _EventWithFreshId(moto.events.utils._BASE_EVENT_MESSAGE)


def main() -> None:
    apply()
    from moto.server import main as moto_server

    moto_server(sys.argv[1:])


if __name__ == "__main__":
    main()
