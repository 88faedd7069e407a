"""The `livetrain` command line: one tool, a subcommand per part of the system.

Each part registers its subcommands from its own `cli` module (`add_commands`).
Those modules import only the standard library at import time, so that
`livetrain --help` and the streamer work without the SageMaker SDK installed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass, fields

COMMAND_MODULES = ("streamer.cli", "pipelines.cli", "pipelines.local.cli", "pipelines.local.serve_cli", "infra.cli",
                   "infra.local.cli")


class UserError(Exception):
    """A mistake the user can fix; printed as one line, never as a traceback."""


def positive_int(text: str) -> int:
    """argparse type for counts: a whole number above zero."""
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return int(text)


@dataclass(frozen=True)
class Config:
    """Defaults shared by every part; each field is overridden by LIVETRAIN_<FIELD>."""

    region: str = "us-east-1"
    bucket: str = "livetrain-data"
    epic: str = "CS.D.BITCOIN.CFD.IP"
    pipeline_name: str = "livetrain"
    model_package_group: str = "livetrain-models"
    endpoint_name: str = "livetrain"
    state_dir: str = ".livetrain"
    role_arn: str = ""  # the SageMaker Pipeline's execution role; "" = not configured

    @classmethod
    def from_env(cls, environ=os.environ) -> Config:
        """Defaults overridden by the LIVETRAIN_* environment variables that are set."""
        overrides = {
            f.name: environ[f"LIVETRAIN_{f.name.upper()}"]
            for f in fields(cls)
            if f"LIVETRAIN_{f.name.upper()}" in environ
        }
        return cls(**overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livetrain",
        description="Continuous training on live market data with SageMaker Pipelines.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config = Config.from_env()
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(commands, config)
    return parser


def _is_aws_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("botocore.", "boto3."))


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user and AWS errors become one line on stderr and exit code 2."""
    from processing.batch_contract import BatchError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (UserError, BatchError) as exc:
        print(f"livetrain: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("livetrain: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_aws_error(exc):
            raise
        print(f"livetrain: AWS error: {exc}", file=sys.stderr)
    return 2
