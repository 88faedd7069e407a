"""boto3 clients for every part's commands: where `--endpoint-url` is checked, once.

Standard library only at import time: boto3 is imported when a client is made.
"""

from __future__ import annotations

from livetrain.errors import UserError


def client(service: str, region: str | None = None, endpoint_url: str | None = None, session=None, **kwargs):
    """A boto3 client for `service` (from `session` when given); UserError when the endpoint is not a URL."""
    import boto3

    try:
        return (session or boto3).client(service, region_name=region, endpoint_url=endpoint_url, **kwargs)
    except ValueError as exc:
        if "Invalid endpoint" not in str(exc):
            raise
        source = "--endpoint-url" if endpoint_url else "AWS_ENDPOINT_URL (or endpoint_url in the AWS config)"
        raise UserError(f"{source} {str(exc).partition(': ')[2]!r} is not a URL; "
                        "pass one like http://127.0.0.1:5000") from None
