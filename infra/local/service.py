"""`livetrain local up | down | status`: the local stack as a background service, its state in one directory.

`up` starts `python -m infra.local.service --state-dir DIR` in a session of its own (so moto, the MongoDB
server and the runs' processes share its process group, and `down` can end them all even if the service
itself was killed), waits until it has provisioned the stack, and returns what it wrote to
`<state dir>/service.json`: its pid and the environment a shell exports to use it (AWS_ENDPOINT_URL, and
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME so that boto3 sends sagemaker-runtime calls to the endpoint server).
It also serves the console (infra/local/console.py) and writes its URL there. The service runs until SIGTERM
(`down`), then stops the stack and removes service.json.

After a kill -9 of the service: its daemons and jobs die with it (PR_SET_PDEATHSIG, livetrain/processes.py);
whatever else is left in its process group is ended by the next `up` or `down`; `up` again on the same
directory resumes the runs left Executing (LocalStack's recovery), with moto's S3 objects, packages and
pipelines replayed from its journal (infra/local/moto_persistence.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from infra.local.services import wait_until
from livetrain.errors import UserError
from livetrain.processes import dies_with_parent

SERVICE_FILE = "service.json"
USER_ERROR = 2  # the service's exit code for a user's mistake; its last line says what to do


def _alive(pid: int, *, group: bool = False) -> bool:
    """Whether the process (or a process of the group) `pid` exists."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _announced(state_dir: Path) -> dict | None:
    try:
        return json.loads((Path(state_dir) / SERVICE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def status(state_dir: Path) -> dict | None:
    """The running service's pid and environment, or None when no service runs on this state directory."""
    info = _announced(state_dir)
    return info if info and _alive(info["pid"]) else None


def _end_leftovers(state_dir: Path) -> bool:
    """A service killed without stopping (kill -9) leaves its service.json; what it started and that is still in
    its process group (a tuning worker, say) is ended. True if there was anything left."""
    info = _announced(state_dir)
    if info is None or _alive(info["pid"]):
        return False
    (Path(state_dir) / SERVICE_FILE).unlink(missing_ok=True)
    if not _alive(info["pid"], group=True):
        return False
    _end_group(info["pid"])
    wait_until(lambda: not _alive(info["pid"], group=True), 10, "the killed local stack's processes to end",
               interval=0.1)
    return True


def up(state_dir: Path, timeout: float = 120, *, environment: dict[str, str] | None = None,
       dies_with_caller: bool = False) -> dict:
    """Start the service in the background and wait until its stack is provisioned; its service.json.
    `environment`: LIVETRAIN_* settings for it (livetrain.config.Config); `dies_with_caller`: it ends with the
    calling process (the demo's own service) instead of outliving it."""
    state_dir = Path(state_dir).resolve()
    running = status(state_dir)
    if running:
        raise UserError(f"the local stack already runs on {state_dir} (pid {running['pid']}); "
                        "stop it with `livetrain local down`")
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    _end_leftovers(state_dir)  # a service that died without cleaning up
    log_path = state_dir / "logs" / "service.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "infra.local.service", "--state-dir", str(state_dir)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(environment or {})}, start_new_session=True,
                                   preexec_fn=dies_with_parent() if dies_with_caller else None)
    try:
        wait_until(lambda: process.poll() is not None or status(state_dir) is not None, timeout,
                   "the local stack to start", interval=0.2)
    except RuntimeError:
        _end_group(process.pid)
        raise UserError(f"the local stack did not start within {timeout:.0f} s; see {log_path}") from None
    threading.Thread(target=process.wait, name="service-reaper", daemon=True).start()  # no zombie for down()
    if process.poll() is not None:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        if process.returncode == USER_ERROR:  # one line naming the problem and the fix
            raise UserError(tail[0])
        raise UserError(f"the local stack exited with code {process.returncode}: {tail[0]} (log: {log_path})")
    return status(state_dir)


def described(info: dict) -> str:
    """How a shell uses the service: comment lines and export lines (`eval "$(livetrain local up)"` sets them)."""
    console = f"its console: {info['console']}; " if info.get("console") else ""  # a service started before consoles
    return "\n".join([f"# the local stack runs (pid {info['pid']}); {console}use it from a shell with:",
                      *(f"export {name}={value}" for name, value in info["environment"].items())])


def down(state_dir: Path, timeout: float = 30) -> bool:
    """Stop the service (SIGTERM; its whole process group if it does not end in time); False if none ran."""
    running = status(state_dir)
    if running is None:
        return _end_leftovers(state_dir)
    pid = running["pid"]
    os.kill(pid, signal.SIGTERM)
    try:  # the service, and what ends just after it (the engine's fork server, once it sees the service gone)
        wait_until(lambda: not _alive(pid, group=True), timeout, "the local stack to stop", interval=0.1)
    except RuntimeError:
        _end_group(pid)
    return True


def _end_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def serve(state_dir: Path) -> None:
    """The service itself: start and provision the stack, announce it in service.json, run until SIGTERM."""
    from infra.local.console import background_console
    from infra.local.stack import LocalStack
    from livetrain.config import Config
    from pipelines.local.records import write_json_atomically

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    path = Path(state_dir) / SERVICE_FILE
    config = Config.from_env()
    with LocalStack(config, state_dir, monitor_every_s=config.monitor_every_s or None) as stack:
        stack.provision()
        stack.run_in_background()
        with background_console(config, stack.moto.url, stack.state_dir) as console:
            write_json_atomically(path, {"pid": os.getpid(), "environment": stack.environment(),
                                         "console": console.url})
            try:
                while not stopping.wait(1):
                    stack.check()
            finally:
                path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.local.service")
    parser.add_argument("--state-dir", type=Path, required=True)
    try:
        serve(parser.parse_args().state_dir)
    except UserError as error:  # `up` shows this line as it is
        print(error, file=sys.stderr)
        sys.exit(USER_ERROR)


if __name__ == "__main__":
    main()
