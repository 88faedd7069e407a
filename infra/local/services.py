"""The local stand-ins for AWS and MongoDB, run as daemons on 127.0.0.1.

- moto in server mode (S3, EventBridge, SQS, Secrets Manager, SageMaker records);
- SecantusDB, a MongoDB-wire-protocol server, with --sync-on-commit so that a
  killed process loses no acknowledged write (see shared/reference/local-stack.md).

Each service is a subprocess whose log goes to the state directory; it is killed when the process that started
it ends, even by SIGKILL (livetrain/processes.py), so a killed stack leaves no daemon holding its state.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from livetrain.errors import UserError
from livetrain.processes import dies_with_parent

HOST = "127.0.0.1"
LOCAL_KEY = "livetrain-local"  # placeholder credentials: moto accepts any, boto3 needs some


def local_client(service: str, url: str, region: str):
    """A boto3 client for a local service at `url`, with the placeholder credentials."""
    import boto3

    return boto3.client(service, endpoint_url=url, region_name=region, aws_access_key_id=LOCAL_KEY,
                        aws_secret_access_key=LOCAL_KEY)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(ready, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `ready()` until it returns true; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s")
        time.sleep(interval)


@dataclass
class Service:
    """A daemon this process started: its name, URL, log file and process."""

    name: str
    url: str
    log_path: Path
    process: subprocess.Popen

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}: {tail[0]} "
                               f"(log: {self.log_path})")


def _spawn(name: str, command: list[str], url: str, log_dir: Path, ready, timeout: float,
           env: dict[str, str] | None = None) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, preexec_fn=dies_with_parent())
    service = Service(name, url, log_path, process)

    def up() -> bool:
        service.check_alive()
        return ready(url)

    try:
        wait_until(up, timeout, name)
    except BaseException:
        service.stop()
        raise
    return service


def _http_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1).read()
        return True
    except OSError:
        return False


def start_moto(state_dir: Path, port: int | None = None, timeout: float = 30) -> Service:
    """moto's HTTP server on 127.0.0.1 (all services on one port), with infra/local/moto_gaps.py applied: its
    pipeline executions are the local engine's, recorded under state_dir."""
    from infra.local.moto_gaps import STATE_DIR_VARIABLE

    port = port or free_port()
    command = [sys.executable, "-m", "infra.local.moto_gaps", "-H", HOST, "-p", str(port)]
    return _spawn("moto", command, f"http://{HOST}:{port}", state_dir / "logs", _http_answers, timeout,
                  env={STATE_DIR_VARIABLE: str(state_dir)})


def _mongo_answers(uri: str) -> bool:
    import pymongo

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def lock_holder(path: Path) -> int | None:
    """The id of the process holding a POSIX lock on `path`, from Linux's /proc/locks; None if none (or unknown)."""
    try:
        stat, locks = path.stat(), Path("/proc/locks").read_text()
    except OSError:
        return None
    file_id = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in locks.splitlines():  # "1: POSIX  ADVISORY  WRITE 11256 fe:00:2189586 0 0"; waiters have "->"
        fields = line.split()
        if "->" not in fields and len(fields) > 5 and fields[5] == file_id:
            return int(fields[4])
    return None


def _check_store_free(store: Path) -> None:
    """UserError naming the process that holds the store's lock (a MongoDB server still running on it)."""
    pid = lock_holder(store / "WiredTiger.lock")
    if pid is None:
        return
    try:
        program = " ".join(Path(arg).name for arg in Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:2])
    except OSError:
        program = "?"
    raise UserError(f"the MongoDB store {store} is in use by process {pid} ({program}); stop it "
                    f"(kill {pid}) or pass another --state-dir")


def start_mongo(state_dir: Path, port: int | None = None, timeout: float = 30) -> Service:
    """SecantusDB on 127.0.0.1 with its data under state_dir/mongo (kept across restarts); UserError when
    another process holds that store."""
    _check_store_free(state_dir / "mongo")
    port = port or free_port()
    command = [str(Path(sys.executable).with_name("secantusd-py")), "--host", HOST, "--port", str(port),
               "--storage-path", str(state_dir / "mongo"), "--sync-on-commit", "--log-level", "WARNING"]
    return _spawn("mongodb", command, f"mongodb://{HOST}:{port}/", state_dir / "logs", _mongo_answers, timeout)
