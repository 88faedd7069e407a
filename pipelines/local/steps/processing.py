"""Processing step (CreateProcessingJob): the container's command with this machine's Python, in a sandbox.

`python3 <script>.py …`, what the pipeline's steps run, starts warm once the engine's fork server serves: in a
child of it (pipelines/local/warm.py, `WarmScript`), with the image's libraries imported already. Any other
command, and a script that starts before then (a run's first step: the server's imports would take longer than
its own), is a subprocess. Every `/opt/ml/processing/...` path (input and output LocalPaths, entrypoint, arguments)
is mapped to the same path under the job's directory; inputs are downloaded there first
and outputs uploaded from there after a zero exit. The job's stdout and stderr go to its
log; on a non-zero exit the script's last stderr line is the failure reason, with sandbox
paths written back as the container paths they stand for.

A job of InstanceCount n runs as n processes at once, each in its own sandbox (`algo-<i>/` under the job's
directory) with its own copy of the inputs, as SageMaker's instances would: a `ShardedByS3Key` input gives each
only its share of the objects. Once every instance has succeeded, each one's outputs are uploaded to the same S3
locations; the job fails if any instance fails.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import re
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from livetrain.processes import dies_with_parent
from pipelines.local import s3io, warm
from pipelines.local.errors import StepFailure
from pipelines.local.expressions import as_text
from pipelines.local.steps.base import Job

CONTAINER_ROOT = "/opt/ml/processing"
_CONTAINER_PATH = re.compile(r"(?<![\w/.])/opt/ml/processing(?=/|$)")
PYTHON_NAMES = {"python", "python3"}


def run(arguments: dict, job: Job) -> dict:
    app = arguments["AppSpecification"]
    if not app.get("ContainerEntrypoint"):
        raise StepFailure(f"AppSpecification of image {app.get('ImageUri')!r} has no ContainerEntrypoint; "
                          "local mode runs the entrypoint with this machine's Python, not the image")
    instances = int(arguments.get("ProcessingResources", {}).get("ClusterConfig", {}).get("InstanceCount", 1))
    if instances == 1:
        outputs = [_run_instance(arguments, job, job.work_dir, 0, 1)]
    else:
        outputs, failures = [None] * instances, []

        def instance(number: int) -> None:
            try:
                outputs[number] = _run_instance(arguments, job, job.work_dir / f"algo-{number + 1}", number, instances)
            except BaseException as exc:  # raised below, once every instance has ended
                failures.append(exc)

        threads = [threading.Thread(target=instance, args=(number,), name=f"{job.job_name}-algo-{number + 1}")
                   for number in range(instances)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
    for number, instance_outputs in enumerate(outputs):
        host = f"algo-{number + 1}: " if instances > 1 else ""
        for name, path, uri in instance_outputs:
            written = s3io.upload_directory(job.s3, path, uri, job.copies)
            job.log(f"{host}output {name}: {len(written)} file(s) to {uri}")
    return {**arguments, "ProcessingJobName": job.job_name, "ProcessingJobArn": job.arn("processing-job"),
            "ProcessingJobStatus": "Completed", "ExitMessage": ""}


def _run_instance(arguments: dict, job: Job, work_dir: Path, number: int, instances: int) -> list[tuple]:
    """One instance of the job: download its inputs and run the command in its sandbox; returns its outputs,
    (name, local folder, S3 URI) each."""
    sandbox = work_dir / CONTAINER_ROOT.lstrip("/")
    host = f"algo-{number + 1}: " if instances > 1 else ""

    def local(path: str) -> Path:
        if not _CONTAINER_PATH.match(path):
            raise StepFailure(f"LocalPath {path!r} must be under {CONTAINER_ROOT}/")
        return Path(_CONTAINER_PATH.sub(str(sandbox), path, count=1))

    for item in arguments.get("ProcessingInputs", []):
        source = item.get("S3Input")
        if source is None:
            raise StepFailure(f"input {item.get('InputName')!r}: only S3Input is supported in local mode")
        sharded = source.get("S3DataDistributionType") == "ShardedByS3Key"
        destination = local(source["LocalPath"])
        destination.mkdir(parents=True, exist_ok=True)
        files = s3io.download_input(job.s3, source["S3Uri"], source.get("S3DataType"), destination,
                                    number if sharded else 0, instances if sharded else 1, job.copies)
        job.log(f"{host}input {item.get('InputName')}: {len(files)} file(s) from {source['S3Uri']}")
    outputs = [(o["OutputName"], local(o["S3Output"]["LocalPath"]), o["S3Output"]["S3Uri"])
               for o in arguments.get("ProcessingOutputConfig", {}).get("Outputs", [])]
    for _, path, _ in outputs:
        path.mkdir(parents=True, exist_ok=True)

    app = arguments["AppSpecification"]
    command = [sys.executable if part in PYTHON_NAMES else _CONTAINER_PATH.sub(str(sandbox), as_text(part))
               for part in [*app["ContainerEntrypoint"], *app.get("ContainerArguments", [])]]
    max_runtime = arguments.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
    try:
        _run_command(command, job, cwd=work_dir, environment=arguments.get("Environment", {}),
                     max_runtime=max_runtime, host=host)
    except StepFailure as failure:  # name paths as the script saw them in the container
        raise StepFailure(host + str(failure).replace(str(sandbox), CONTAINER_ROOT), failure.exception_type) from None
    return outputs


def _run_command(command: list[str], job: Job, cwd: Path, environment: dict, max_runtime: int | None,
                 host: str = "") -> None:
    """Run the job's command; StepFailure with the last stderr line on a non-zero exit. Log lines from its
    stderr start with `host`."""
    (cwd / "tmp").mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "TMPDIR": str(cwd / "tmp"),
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", **{k: str(v) for k, v in environment.items()}}
    job.log(f"{host}$ {' '.join(command)}")
    if _is_python_script(command) and warm.ready.is_set():
        process = WarmScript(command[1], command[2:], cwd, env, job.log_path)
    else:
        with job.log_path.open("a") as log:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.PIPE, text=True,
                                       errors="replace", preexec_fn=dies_with_parent())  # a killed stack ends it
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(max_runtime, stop) if max_runtime else None
    if timer:
        timer.start()
    last_error = ""
    for line in process.stderr:
        job.log(host + line)
        last_error = line.strip() or last_error
    code = process.wait()
    if timer:
        timer.cancel()
    if timed_out.is_set():
        raise StepFailure(f"the job ran longer than MaxRuntimeInSeconds={max_runtime} and was stopped")
    if code < 0:
        raise StepFailure(f"the job's process was killed by {signal.Signals(-code).name}",
                          exception_type="SageMaker.JOB_INTERNAL_ERROR")
    if code > 0:
        raise StepFailure(last_error or f"the job's command exited with code {code}")


def _is_python_script(command: list[str]) -> bool:
    """`python <script>.py [arguments]`: what the pipeline's Processing steps run."""
    return len(command) >= 2 and command[0] == sys.executable and command[1].endswith(".py")


class WarmScript:
    """`python script arguments…` in a child of the fork server (pipelines/local/warm.py), with the parts of a
    subprocess.Popen that `_run_command` uses: `stderr` (text lines), `kill()`, `wait()` → exit code (negative:
    the signal that ended it).

    The child is the script's process as in its container: the script's directory first on sys.path, sys.argv,
    the working directory and the environment (nothing else of this process's) set before it runs as __main__;
    stdout appended to the job's log, stderr read line by line here. What the fork server preloaded is imported
    already, so settings a library reads at import (OMP_NUM_THREADS, say) are the fork server's, not the job's
    Environment's; BLAS runs one thread, as in the training workers: the steps running at once share the cores."""

    def __init__(self, script: str, arguments: list[str], cwd: Path, env: dict[str, str], log_path: Path):
        reader, writer = warm.context.Pipe(duplex=False)
        self.process = warm.context.Process(target=_run_script, name=f"processing {Path(script).name}",
                                            args=(script, arguments, str(cwd), env, str(log_path), writer))
        self.process.start()
        writer.close()
        self.stderr = open(os.dup(reader.fileno()), encoding="utf-8", errors="replace")  # noqa: SIM115 (wait closes)
        reader.close()

    def kill(self) -> None:
        self.process.kill()

    def wait(self) -> int:
        self.process.join()
        self.stderr.close()
        return self.process.exitcode


def _run_script(script: str, arguments: list[str], cwd: str, env: dict[str, str], log_path: str, stderr) -> None:
    """In the fork server's child: become `python script arguments…` and run it (its SystemExit is the exit code)."""
    from threadpoolctl import threadpool_limits

    warm.exit_with_parent()
    multiprocessing.current_process().daemon = False  # the script may start processes of its own,
    multiprocessing.set_start_method(None, force=True)  # with the platform's default method, as a fresh Python does
    threadpool_limits(1)  # idle BLAS threads spin: two of them took the baseline from 0.55 to 1.2 CPU-s at 10k
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(stderr.fileno(), 2)
    os.close(log)
    stderr.close()
    sys.stdout.reconfigure(write_through=True)  # PYTHONUNBUFFERED, as the cold command gets
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # TMPDIR is read again
    sys.argv = [script, *arguments]
    sys.path.insert(0, str(Path(script).parent))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        atexit._run_exitfuncs()  # the exit handlers, as an interpreter's end runs them; a fork's end does not
