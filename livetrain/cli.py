"""The `livetrain` command line: one tool, a subcommand per part of the system.

Each part registers its subcommands from its own `cli` module (`add_commands(commands, config)`), in the
order of PARTS. Those modules import only the standard library and the kernel at import time, so that
`livetrain --help` and the streamer work without the SageMaker SDK installed.
"""

from __future__ import annotations

import argparse
import sys

from infra import cli as infra_cli
from infra.local import cli as demo_cli
from livetrain.aws_errors import describe, is_aws_error
from livetrain.config import Config
from livetrain.errors import UserError
from pipelines import cli as pipeline_cli
from pipelines.local import cli as local_cli
from pipelines.local import serve_cli
from streamer import cli as streamer_cli

PARTS = (streamer_cli, pipeline_cli, local_cli, serve_cli, infra_cli, demo_cli)


class Commands:
    """Where the parts register: top-level commands, and command groups that more than one part fills."""

    def __init__(self, subparsers):
        self._subparsers = subparsers
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        """A top-level command, e.g. `livetrain stream`."""
        return self._subparsers.add_parser(name, **kwargs)

    def add_group(self, name: str, **kwargs) -> argparse._SubParsersAction:
        """A command group, e.g. `livetrain pipeline …`; returns its subcommands."""
        group = self.add_parser(name, **kwargs)
        self._groups[name] = _add_subcommands(group, "SUBCOMMAND")
        return self._groups[name]

    def group(self, name: str) -> argparse._SubParsersAction:
        """The subcommands of a group another part added (its parsers by name: `.choices`)."""
        return self._groups[name]


def _add_subcommands(parser: argparse.ArgumentParser, metavar: str) -> argparse._SubParsersAction:
    """Subcommands, one of which is needed. Not `required=True`: argparse would then report a missing command
    before an unknown option (`livetrain --bogus`); the parser's default handler reports it instead."""
    parser.set_defaults(handler=lambda args: parser.error(f"the following arguments are required: {metavar}"))
    return parser.add_subparsers(metavar=metavar)


def build_parser(config: Config | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livetrain",
        description="Continuous training on live market data with SageMaker Pipelines.",
    )
    commands = Commands(_add_subcommands(parser, "COMMAND"))
    config = config or Config.from_env()
    for part in PARTS:
        part.add_commands(commands, config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user and AWS errors become one line on stderr and exit code 2."""
    from lambdas.epics import EpicError
    from processing.batch_contract import BatchError

    try:
        args = build_parser().parse_args(argv)
        return args.handler(args) or 0
    except (UserError, BatchError, EpicError) as exc:
        print(f"livetrain: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("livetrain: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        print(f"livetrain: AWS error: {describe(exc)}", file=sys.stderr)
    return 2
