"""What an AWS error means (not found, throttled, a service fault) and how to say it in one line.

Every part that calls AWS through boto3 asks here; the deploy Lambda alone keeps a small copy of
`is_not_found`, because it ships as one file with nothing but boto3.
Standard library only at import time: botocore is imported when an error is being described.
"""

from __future__ import annotations

from contextlib import contextmanager

from livetrain.errors import UserError

NOT_FOUND_CODES = {"404", "NotFound", "NoSuchKey", "NoSuchBucket", "ResourceNotFound", "ResourceNotFoundException"}
NOT_FOUND_MESSAGES = ("Could not find", "does not exist")  # SageMaker's and CloudFormation's ValidationException
THROTTLING_CODES = {"Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
                    "TooManyRequestsException", "SlowDown", "ProvisionedThroughputExceededException"}
NO_CREDENTIALS = ("no AWS credentials found; configure them (aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                  "AWS_SECRET_ACCESS_KEY); a local stack at --endpoint-url needs them too, any values will do "
                  "(e.g. AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test)")


def _response(exc: BaseException) -> dict:
    response = getattr(exc, "response", None)  # a ClientError's parsed response
    return response if isinstance(response, dict) else {}


def _error(exc: BaseException) -> dict:
    return _response(exc).get("Error", {})


def error_code(exc: BaseException) -> str:
    """The service's error code of a botocore ClientError ("" for any other exception)."""
    return str(_error(exc).get("Code", ""))


def is_aws_error(exc: BaseException) -> bool:
    """An exception raised by boto3 or botocore."""
    return type(exc).__module__.startswith(("botocore.", "boto3."))


def is_not_found(exc: BaseException) -> bool:
    """The resource asked for does not exist (S3's 404s, SageMaker's "Could not find", CloudFormation's stack)."""
    message = str(_error(exc).get("Message", ""))
    return error_code(exc) in NOT_FOUND_CODES or any(text in message for text in NOT_FOUND_MESSAGES)


def is_throttling(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLING_CODES


def is_service_fault(exc: BaseException) -> bool:
    """The service failed (HTTP 5xx) or could not be reached: trying again later may work."""
    from botocore.exceptions import ConnectionError, HTTPClientError

    status = _response(exc).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status >= 500 or isinstance(exc, ConnectionError | HTTPClientError)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line saying what went wrong in an AWS call and, when it is clear, what to do."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return NO_CREDENTIALS
    if isinstance(exc, EndpointConnectionError):
        return f"cannot connect to {exc.kwargs.get('endpoint_url')}; check --endpoint-url and the network"
    error = _error(exc)
    if not error:
        return one_line(exc)
    code = error_code(exc) or "Error"
    return f"{code}: {' '.join(str(error.get('Message') or exc).split())}{_hint(code)}"


def _hint(code: str) -> str:
    if code == "NoSuchBucket":
        return "; create the bucket or pass --bucket"
    if "AccessDenied" in code or code in ("UnauthorizedOperation", "UnrecognizedClientException"):
        return "; the credentials in use are not allowed to make this call"
    if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId"):
        return "; refresh the AWS credentials"
    return ""


@contextmanager
def aws_call(operation: str, if_missing: str = ""):
    """Turn a failure of one AWS call into a UserError: one line naming the call, the cause and what to do.

    `if_missing` is appended when the resource was not found (other than a bucket), e.g. how to create it.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        hint = f"; {if_missing}" if if_missing and is_not_found(exc) and error_code(exc) != "NoSuchBucket" else ""
        raise UserError(f"{operation}: {describe(exc)}{hint}") from None
