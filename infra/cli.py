"""`livetrain infra template|lint|deploy`: the CloudFormation stack for AWS.

Parses the command line into settings and calls `infra/deploy.py`. Only the standard library and stdlib-only
modules are imported here; the deploy handler imports boto3 when it runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from infra.template import TEMPLATE_PATH as TEMPLATE
from lambdas.epics import parse_epics
from livetrain.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CHECKOV_VENV = ROOT / ".venv-checkov"


def add_commands(commands, config) -> None:
    infra = commands.add_parser("infra", help="print, lint or deploy the AWS stack (CloudFormation)",
                                description="The AWS stack: data bucket, event rules, roles, deploy Lambda, streamer.")
    actions = infra.add_subparsers(dest="infra_action", required=True, metavar="ACTION")

    template = actions.add_parser("template", help="print the CloudFormation template")
    template.set_defaults(handler=run_template)

    lint = actions.add_parser("lint", help="check the template with cfn-lint and checkov")
    lint.set_defaults(handler=run_lint)

    deploy = actions.add_parser(
        "deploy", help="package the Lambda, create or update the stack through a change set, upsert the pipeline",
        description="Package the deploy Lambda, upload it, create or update the stack through a change set, wait, "
                    "upsert the pipeline definition with the stack's execution role, and print the stack's outputs.")
    deploy.add_argument("--stack-name", required=True)
    deploy.add_argument("--region", default=config.region, help=f"default {config.region}")
    deploy.add_argument("--role-arn", help="service role CloudFormation assumes (default: your credentials)")
    deploy.add_argument("--endpoint-url", help="AWS endpoint (e.g. a local moto server)")
    deploy.add_argument("--bucket", default=config.bucket, help=f"data bucket to create (default {config.bucket})")
    deploy.add_argument("--pipeline-name", default=config.pipeline_name)
    deploy.add_argument("--model-package-group", default=config.model_package_group)
    deploy.add_argument("--endpoint-name", default=config.endpoint_name,
                        help=f"the endpoint approved models are deployed to (default {config.endpoint_name})")
    deploy.add_argument("--epic", default=config.epic, metavar="EPIC[,EPIC…]",
                        help="the markets the streamer follows, each with its batch rule, model package group, "
                             f"endpoint and live-quality monitor (default {config.epic})")
    deploy.add_argument("--artifact-bucket", help="bucket for the Lambda's zip (default "
                                                  "livetrain-artifacts-<account>-<region>, created if missing)")
    deploy.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="any other template parameter, e.g. StreamerSubnetIds=subnet-a,subnet-b (repeatable)")
    deploy.add_argument("--template", type=Path, default=TEMPLATE, help="template file (default: the project's)")
    deploy.add_argument("--timeout", type=int, default=3600, help="seconds to wait for the stack (default 3600)")
    deploy.add_argument("--no-pipeline", action="store_true",
                        help="deploy the stack only; upsert the pipeline later with `livetrain pipeline upsert`")
    deploy.set_defaults(handler=run_deploy, cache_dir=config.cache_dir)


def run_template(args) -> int:
    sys.stdout.write(TEMPLATE.read_text())
    return 0


def checkov_command() -> list[str] | None:
    """checkov from its own virtual environment (`make checkov`), else from PATH; None when neither exists."""
    local = CHECKOV_VENV / "bin" / "checkov"
    found = str(local) if local.exists() else shutil.which("checkov")
    return None if found is None else [found, "-f", str(TEMPLATE), "--framework", "cloudformation",
                                       "--skip-download", "--quiet", "--compact"]


def run_lint(args) -> int:
    """cfn-lint, then checkov (every skip is listed in the template with its reason); non-zero if either fails."""
    checkov = checkov_command()
    if checkov is None:
        raise UserError("checkov is not installed: run `make checkov` (it creates .venv-checkov)")
    cfn_lint = [str(Path(sys.executable).with_name("cfn-lint")), str(TEMPLATE)]
    failed = []
    for name, command in (("cfn-lint", cfn_lint), ("checkov", checkov)):
        print(f"infra lint: {name} ...", file=sys.stderr, flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(name)
    if failed:
        print(f"infra lint: {' and '.join(failed)} found problems in {TEMPLATE}", file=sys.stderr)
        return 1
    print(f"infra lint: {TEMPLATE.name} is clean (cfn-lint, checkov)", file=sys.stderr)
    return 0


def run_deploy(args) -> int:
    from infra.deploy import DeploySettings, deploy

    deploy(DeploySettings(
        stack_name=args.stack_name, region=args.region, bucket=args.bucket, pipeline_name=args.pipeline_name,
        model_package_group=args.model_package_group, endpoint_name=args.endpoint_name,
        epics=parse_epics([args.epic]),
        parameters=tuple(args.parameter), template=args.template, role_arn=args.role_arn,
        endpoint_url=args.endpoint_url, artifact_bucket=args.artifact_bucket, timeout=args.timeout,
        upsert_pipeline=not args.no_pipeline, cache_dir=args.cache_dir))
    return 0
