"""`livetrain serve`: a model (or the endpoints in SageMaker records) as a local SageMaker endpoint.

Only the standard library is imported here; the handler imports the server lazily.
"""

from __future__ import annotations

import argparse
import sys

from livetrain.arguments import port_number


def add_commands(commands, config) -> None:
    serve = commands.add_parser(
        "serve", help="serve a model like a SageMaker endpoint on 127.0.0.1",
        description="Serve the SageMaker Runtime API (POST /endpoints/<name>/invocations) and the container "
                    "contract (GET /ping, POST /invocations) on 127.0.0.1, so boto3's invoke_endpoint works "
                    "unchanged. With --model-data, serve that model.tar.gz as --endpoint-name; without it, "
                    "serve every endpoint found in the SageMaker records at --endpoint-url, following "
                    "endpoint updates.")
    serve.add_argument("--model-data", metavar="URI_OR_PATH", help="a model.tar.gz path or s3:// URI")
    serve.add_argument("--port", type=port_number, default=8080, help="default 8080, as in a SageMaker container")
    serve.add_argument("--endpoint-name", default=config.endpoint_name,
                       help=f"the endpoint name to serve --model-data as, and the one /invocations answers "
                            f"(default {config.endpoint_name})")
    serve.add_argument("--endpoint-url", help="AWS endpoint for S3 and the SageMaker records, e.g. the local "
                                              "moto server (default: AWS itself)")
    serve.set_defaults(handler=run_serve, config=config)


def run_serve(args: argparse.Namespace) -> int:
    from livetrain import aws
    from livetrain.errors import UserError
    from pipelines.local.app_server import serve_until_stopped
    from pipelines.local.endpoint import EndpointServer, RecordsResolver, StaticResolver
    from pipelines.local.errors import AlgorithmError

    def client(service: str):
        return aws.client(service, args.config.region, args.endpoint_url)

    if args.model_data:
        resolver = StaticResolver({args.endpoint_name: args.model_data}, client("s3"))
        try:
            resolver.resolve(args.endpoint_name)  # fail now, not on the first request
        except (AlgorithmError, OSError) as exc:
            raise UserError(f"cannot load --model-data {args.model_data}: {exc}") from None
        serving = f"{args.model_data} as endpoint {args.endpoint_name}"
    else:
        resolver = RecordsResolver(client("sagemaker"), client("s3"), default_name=args.endpoint_name)
        serving = f"the endpoints in the SageMaker records at {args.endpoint_url or 'AWS'}"
    serve_until_stopped(EndpointServer(resolver, port=args.port), lambda url: print(
        f"Serving {serving} at {url} (POST {url}/endpoints/<name>/invocations); Ctrl-C to stop", file=sys.stderr))
    print("Stopped.", file=sys.stderr)
    return 0
