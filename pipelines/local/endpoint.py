"""A local SageMaker real-time endpoint on aiohttp, bound to 127.0.0.1.

It speaks the SageMaker Runtime API, `POST /endpoints/<name>/invocations`, so that
`boto3.client("sagemaker-runtime", endpoint_url=URL).invoke_endpoint(...)` works unchanged, and the
container contract, `GET /ping` and `POST /invocations` (the resolver's default endpoint).
Requests use the Linear Learner formats (text/csv, application/json, application/jsonlines; Accept
application/json, the default, or application/jsonlines). A request the model cannot answer gets a 4xx
with a JSON `{"message": ...}` and the `x-amzn-ErrorType` header botocore reads as the error code:
415 unsupported content type, 406 unsupported accept type, 400 malformed or wrong feature count,
404 unknown endpoint, 413 body over the service's 6 MiB limit (refused from its Content-Length, before it is
read). A connection that has not sent a whole request's headers within `header_timeout_s` (or stays idle that
long between requests) is closed, so clients that never finish cannot pile up.

A resolver maps an endpoint name to a model: `StaticResolver` (names -> model.tar.gz path or s3:// URI)
or `RecordsResolver` (DescribeEndpoint -> DescribeEndpointConfig -> DescribeModel [-> DescribeModelPackage]
-> ModelDataUrl, reloaded when the endpoint's config changes, as after a blue/green update). An endpoint
config with a DataCaptureConfig has its invocations captured to S3 as SageMaker does (capture.py).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from livetrain.aws_errors import is_not_found
from pipelines.local.algorithms.linear_learner import LinearLearnerModel, decode_request, encode_response, load_model
from pipelines.local.app_server import BackgroundApp
from pipelines.local.capture import CaptureWriter
from pipelines.local.errors import InferenceError
from pipelines.local.models import model_container

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's Body limit in the service model
HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_VARIANT = "AllTraffic"


class UnknownEndpoint(LookupError):
    """No endpoint of that name (HTTP 404)."""


@dataclass(frozen=True)
class Served:
    """The model behind an endpoint and the production variant that answers."""

    model: LinearLearnerModel
    variant: str = DEFAULT_VARIANT
    capture: dict | None = None  # the endpoint config's DataCaptureConfig


def load_model_data(url: str, s3_client=None) -> LinearLearnerModel:
    """The model at a ModelDataUrl: a local model.tar.gz path, or an s3:// URI downloaded first."""
    if not url.startswith("s3://"):
        return load_model(url)
    if s3_client is None:
        raise ValueError(f"{url} is on S3 but no S3 client was given")
    bucket, _, key = url[len("s3://"):].partition("/")
    with tempfile.TemporaryDirectory(prefix="livetrain-endpoint-") as directory:
        path = Path(directory) / "model.tar.gz"
        s3_client.download_file(bucket, key, str(path))
        return load_model(path)


class StaticResolver:
    """Fixed endpoint names, each serving one model.tar.gz (path or s3:// URI), loaded on first use."""

    def __init__(self, models: dict[str, str], s3_client=None):
        self.urls = dict(models)
        self.s3 = s3_client
        self.default_name = next(iter(self.urls), None)
        self._models: dict[str, Served] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str) -> Served:
        if name not in self.urls:
            raise UnknownEndpoint(f"Endpoint {name} not found; this server serves {', '.join(self.urls)}")
        with self._lock:
            if name not in self._models:
                self._models[name] = Served(load_model_data(self.urls[name], self.s3))
            return self._models[name]


@dataclass
class _Resolved:
    config_name: str
    served: Served
    checked: float


class RecordsResolver:
    """Endpoints as the SageMaker records describe them (e.g. moto's), rechecked every `recheck_seconds`."""

    def __init__(self, sagemaker_client, s3_client, default_name: str | None = None, recheck_seconds: float = 1.0):
        self.sagemaker, self.s3 = sagemaker_client, s3_client
        self.default_name = default_name
        self.recheck_seconds = recheck_seconds
        self._endpoints: dict[str, _Resolved] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str) -> Served:
        with self._lock:
            known = self._endpoints.get(name)
            if known and time.monotonic() - known.checked < self.recheck_seconds:
                return known.served
            config_name = self._endpoint_config_name(name)
            if not known or known.config_name != config_name:
                known = _Resolved(config_name, self._serve_config(config_name), 0.0)
                self._endpoints[name] = known
            known.checked = time.monotonic()
            return known.served

    def _endpoint_config_name(self, name: str) -> str:
        from botocore.exceptions import ClientError

        try:
            return self.sagemaker.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        except ClientError as exc:
            if is_not_found(exc):
                raise UnknownEndpoint(f"Endpoint {name} not found") from None
            raise

    def _serve_config(self, config_name: str) -> Served:
        config = self.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        variant = config["ProductionVariants"][0]
        url = model_container(self.sagemaker, variant["ModelName"]).get("ModelDataUrl")
        if not url:
            raise ValueError(f"model {variant['ModelName']} has no ModelDataUrl")
        return Served(load_model_data(url, self.s3), variant.get("VariantName", DEFAULT_VARIANT),
                      config.get("DataCaptureConfig"))


def invoke(served: Served, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    """One inference request against a served model: (response body, content type) or InferenceError."""
    features = decode_request(body, content_type or "", served.model.feature_dim)
    scores, labels = served.model.predict(features)
    return encode_response(scores, labels, accept)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": (
        "ValidationError" if status < 500 else "InternalFailure")})


@web.middleware
async def _json_errors(request: web.Request, handler):
    """Every failure as JSON {"message": ...}; a 5xx only for a fault of the server itself."""
    try:
        return await handler(request)
    except InferenceError as exc:
        return _error(exc.status, str(exc))
    except UnknownEndpoint as exc:
        return _error(404, str(exc.args[0]))
    except web.HTTPRequestEntityTooLarge:
        response = _error(413, f"the request body is larger than {MAX_PAYLOAD_BYTES} bytes; send fewer records "
                               "per request")
        response.force_close()  # the rest of the body is not read: the connection ends with the answer
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def build_app(resolver, max_payload_bytes: int = MAX_PAYLOAD_BYTES, capture: CaptureWriter | None = None
              ) -> web.Application:
    """The aiohttp application: Runtime API and container routes over `resolver`; invocations of endpoints
    whose config asks for data capture go to `capture`."""

    async def answer(request: web.Request, name: str | None) -> web.Response:
        if name is None:
            raise UnknownEndpoint("this server has no default endpoint; POST /endpoints/<name>/invocations")
        if (request.content_length or 0) > max_payload_bytes:  # refused before a byte of it is read
            raise web.HTTPRequestEntityTooLarge(max_size=max_payload_bytes, actual_size=request.content_length)
        body = await request.read()
        loop = asyncio.get_running_loop()
        served = await loop.run_in_executor(None, resolver.resolve, name)
        payload, content_type = await loop.run_in_executor(
            None, invoke, served, body, request.headers.get("Content-Type"), request.headers.get("Accept"))
        if capture is not None and served.capture:
            capture.add(served.capture, name, served.variant, (body, request.headers.get("Content-Type")),
                        (payload, content_type), request.headers.get("X-Amzn-SageMaker-Inference-Id"))
        return web.Response(body=payload, headers={"Content-Type": content_type,
                                                   "x-Amzn-Invoked-Production-Variant": served.variant})

    async def runtime_invocations(request: web.Request) -> web.Response:
        return await answer(request, request.match_info["name"])

    async def container_invocations(request: web.Request) -> web.Response:
        return await answer(request, resolver.default_name)

    async def ping(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application(client_max_size=max_payload_bytes, middlewares=[_json_errors])
    app.router.add_post("/endpoints/{name}/invocations", runtime_invocations)
    app.router.add_post("/invocations", container_invocations)
    app.router.add_get("/ping", ping)
    return app


class EndpointServer(BackgroundApp):
    """The app served from a background thread: `start()` returns the URL, `stop()` shuts it down."""

    def __init__(self, resolver, port: int = 0, max_payload_bytes: int = MAX_PAYLOAD_BYTES,
                 header_timeout_s: float = HEADER_TIMEOUT_SECONDS):
        self.resolver, self.max_payload_bytes = resolver, max_payload_bytes
        s3 = getattr(resolver, "s3", None)  # data capture goes where the models come from
        self.capture = CaptureWriter(s3) if s3 is not None else None
        # aiohttp's keep-alive timer runs from the connection's start until a request's headers are in, and
        # between requests: the header timeout
        super().__init__(lambda: build_app(resolver, max_payload_bytes, self.capture), port,
                         keepalive_timeout=header_timeout_s, name="endpoint-server")

    def start(self) -> str:
        url = super().start()
        if self.capture is not None:
            self.capture.start()
        return url

    def stop(self) -> None:
        was_running = self.running
        super().stop()
        if was_running and self.capture is not None:
            self.capture.stop()
