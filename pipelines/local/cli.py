"""Local-mode commands: `livetrain pipeline run-local`, `pipeline steps`, `pipeline executions --local`, `report`.

Only the standard library is imported here; handlers import the engine (and boto3) when they run.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.local.records import ExecutionStatus, StepStatus


def add_commands(commands, config) -> None:
    """`run-local`, `steps` and `executions --local` in the `pipeline` group (pipelines/cli.py), and `report`."""
    pipeline = commands.group("pipeline")
    run = pipeline.add_parser(
        "run-local", help="run a pipeline definition on this machine (no Docker, no SageMaker jobs)",
        description="Execute a SageMaker pipeline definition locally: processing scripts in subprocesses, "
                    "the local tuner and Linear Learner, records (models, packages) at --endpoint-url.")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--definition", metavar="FILE", help="definition JSON (from `livetrain pipeline definition`)")
    source.add_argument("--pipeline-name", metavar="NAME", help="fetch the definition with DescribePipeline")
    run.add_argument("--param", action="append", default=[], metavar="Name=Value",
                     help="override a pipeline parameter (repeatable); Epic defaults to the epic of the batch "
                          "InputManifestKey names (batches/<epic>/…)")
    add_endpoint_argument(run)
    add_state_dir_argument(run, config)
    run.set_defaults(handler=run_local, config=config)

    steps = pipeline.add_parser("steps", help="the steps of a local execution",
                                description="Show each step of a local execution: status, times, attempts, and "
                                            "why it failed or did not run.")
    steps.add_argument("execution", metavar="EXECUTION", help="execution id or ARN")
    add_state_dir_argument(steps, config)
    steps.set_defaults(handler=lambda args: print_steps(args.execution, args.state_dir))

    # `pipeline executions --local`: the executions recorded by run-local instead of SageMaker's
    executions = pipeline.choices["executions"]
    executions.add_argument("--local", action="store_true",
                            help="list the executions of `run-local` recorded under --state-dir instead")
    add_state_dir_argument(executions, config)
    remote = executions.get_default("handler")
    executions.set_defaults(handler=lambda args: print_local_executions(args.state_dir) if args.local
                            else remote(args))

    report = commands.add_parser("report", help="HTML report of a local execution",
                                 description="Write an HTML page with PNG plots of a local execution: the DAG with "
                                             "step status and duration, the tuning objective per training job, "
                                             "confusion matrices and the evaluation metrics.")
    report.add_argument("execution", metavar="EXECUTION", help="execution id or ARN")
    report.add_argument("--out", metavar="DIR", help="output directory (default: <state-dir>/reports/<id>)")
    add_state_dir_argument(report, config)
    report.set_defaults(handler=write_report)


def add_endpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", metavar="URL",
                        help="endpoint for S3 and SageMaker records, e.g. moto's (default: AWS or $AWS_ENDPOINT_URL)")


def add_state_dir_argument(parser: argparse.ArgumentParser, config) -> None:
    parser.add_argument("--state-dir", default=config.state_dir, metavar="DIR",
                        help=f"where local executions are recorded (default {config.state_dir})")


def run_local(args: argparse.Namespace) -> int:
    from pipelines.local import warm

    warm.start()  # first: its imports take longer than the rest of the start
    import boto3

    from livetrain import aws
    from pipelines.local.engine import LocalExecution, fetch_definition, load_definition_file
    from pipelines.parameters import parse_assignments, resolve_parameters, with_batch_epic

    config = args.config
    session = boto3.session.Session(region_name=config.region)

    def client(service: str):
        return aws.client(service, endpoint_url=args.endpoint_url, session=session)

    s3, sagemaker = client("s3"), client("sagemaker")
    overrides = parse_assignments(args.param)
    if args.definition:
        definition = load_definition_file(args.definition)
        pipeline_name = config.pipeline_name
        account = client("sts").get_caller_identity()["Account"]
        pipeline_arn = f"arn:aws:sagemaker:{config.region}:{account}:pipeline/{pipeline_name}"
    else:
        pipeline_name = args.pipeline_name
        definition, pipeline_arn = fetch_definition(sagemaker, pipeline_name)
    parameters = resolve_parameters(definition, with_batch_epic(definition, overrides))
    execution = LocalExecution(definition, parameters, s3=s3, sagemaker=sagemaker, state_dir=args.state_dir,
                               pipeline_name=pipeline_name, pipeline_arn=pipeline_arn)
    record = execution.run()
    status, seconds = record["PipelineExecutionStatus"], record["DurationSeconds"]
    print(f"details: livetrain pipeline steps {execution.id} --state-dir {args.state_dir}", file=sys.stderr)
    reason = f": {record['FailureReason']}" if record["FailureReason"] else ""
    print(f"Execution {execution.id} {status} in {seconds:.1f} s{reason}", flush=True)
    return 0 if status == ExecutionStatus.SUCCEEDED else 1


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned columns; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def print_steps(execution: str, state_dir: str) -> int:
    """`livetrain pipeline steps EXECUTION`: one line per step."""
    from pipelines.local.records import ExecutionStore, step_duration

    record = ExecutionStore(state_dir).load(execution)
    rows = [["STEP", "TYPE", "STATUS", "STARTED", "DURATION", "ATTEMPTS", "DETAIL"]]
    for step in record["Steps"].values():
        rows.append([step["StepName"], step["StepType"], step["StepStatus"], (step.get("StartTime") or "")[11:19],
                     _seconds(step_duration(step)), str(step.get("AttemptCount", "")), step_detail(step)])
    print(f"{record['PipelineExecutionId']} ({record['PipelineName']}): {record['PipelineExecutionStatus']}"
          + (f": {record['FailureReason']}" if record["FailureReason"] else ""))
    print(format_table(rows))
    return 0


def step_detail(step: dict) -> str:
    """What a reader wants to know about a step beyond its status."""
    properties = step.get("Properties") or {}
    if step["StepStatus"] == StepStatus.FAILED:
        return step.get("FailureReason", "")
    if step["StepStatus"] == StepStatus.NOT_EXECUTED:
        return step.get("Reason", "")
    if step.get("CacheHitResult"):
        return f"cached from {step['CacheHitResult']['SourcePipelineExecutionArn'].rsplit('/', 1)[-1]}"
    if "Outcome" in properties:
        return f"Outcome {properties['Outcome']}"
    if "BestTrainingJob" in properties:
        best = properties["BestTrainingJob"]
        metric = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
        return f"best {best.get('TrainingJobName')}: {metric.get('MetricName')} = {metric.get('Value')}"
    return properties.get("ModelPackageArn", "")


def print_local_executions(state_dir: str) -> int:
    """`livetrain pipeline executions --local`: the executions recorded under the state directory."""
    from pipelines.local.records import ExecutionStore, step_duration

    records = ExecutionStore(state_dir).all()
    if not records:
        print(f"no local executions in {state_dir}")
        return 0
    rows = [["EXECUTION", "PIPELINE", "STATUS", "STARTED", "DURATION", "FAILURE REASON"]]
    for record in records:
        rows.append([record["PipelineExecutionId"], record["PipelineName"], record["PipelineExecutionStatus"],
                     record["StartTime"][:19].replace("T", " "), _seconds(step_duration(record)),
                     record.get("FailureReason") or ""])
    print(format_table(rows))
    return 0


def write_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipelines.local.records import ExecutionStore
    from pipelines.local.report import render_report

    store = ExecutionStore(args.state_dir)
    record = store.load(args.execution)
    out = Path(args.out) if args.out else store.state_dir / "reports" / record["PipelineExecutionId"]
    page = render_report(record, out)
    print(f"wrote {page}")
    return 0
