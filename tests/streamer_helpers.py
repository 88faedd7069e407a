"""Helpers shared by the streamer's tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from conftest import LIVETRAIN

# "A second or two" (ECS sends SIGKILL 30 s after SIGTERM): 1.6 s on an idle machine (the streamer waits at most
# 1 s for an export in progress, then exits); up to 3.0 s seen while other test runs loaded both cores.
STOP_WITHIN_S = 4.0


def database_uri(mongo_uri: str, database: str) -> str:
    """`mongo_uri` with its path set to `database` (query options kept)."""
    base, _, query = mongo_uri.partition("?")
    host = "/".join(base.split("/")[:3])
    return f"{host}/{database}" + (f"?{query}" if query else "")


class StreamProcess:
    """`livetrain stream` in the background, its stderr in a file."""

    def __init__(self, args, tmp_path, env=None):
        self.log = tmp_path / "stream.log"
        self.process = subprocess.Popen([str(LIVETRAIN), *map(str, args)], stdout=subprocess.DEVNULL,
                                        stderr=self.log.open("w"), env={**os.environ, **(env or {})})

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def terminate(self, timeout: float) -> tuple[int, float]:
        """Send SIGTERM; (exit code, seconds from the signal to the exit)."""
        self.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = self.wait(timeout)
        return code, time.monotonic() - signalled
