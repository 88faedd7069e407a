"""Helpers shared by the streamer's tests."""

from __future__ import annotations

import time


def wait_until(condition, timeout: float = 20.0, what: str = "condition", every: float = 0.02):
    """Poll `condition` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def database_uri(mongo_uri: str, database: str) -> str:
    """`mongo_uri` with its path set to `database` (query options kept)."""
    base, _, query = mongo_uri.partition("?")
    host = "/".join(base.split("/")[:3])
    return f"{host}/{database}" + (f"?{query}" if query else "")
