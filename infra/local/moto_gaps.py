"""What moto lacks that the local loop needs, closed in this one place and pinned to moto's version.

- UpdateEndpoint (moto 5.2.5 answers HTTP 500): the deploy Lambda's blue/green update of an endpoint to a new
  endpoint config. Locally the switch is immediate: the endpoint stays InService on the new config (there are
  no instances to bake, so no alarms to watch).

`python -m infra.local.moto_gaps -H 127.0.0.1 -p PORT` runs moto's server with the gaps closed; `apply()`
closes them in-process (for moto's decorator or threaded server).
"""

from __future__ import annotations

import sys

PINNED_MOTO = "5.2.5"


def apply() -> None:
    """Add the missing operations to moto's SageMaker backend and its HTTP responses."""
    import moto
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


def main() -> None:
    apply()
    from moto.server import main as moto_server

    moto_server(sys.argv[1:])


if __name__ == "__main__":
    main()
