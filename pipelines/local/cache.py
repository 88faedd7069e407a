"""Step caching (a step's `CacheConfig`): a successful step's properties, keyed by its type and resolved arguments.

Entries live in `<state_dir>/cache/<sha256>.json`; an entry older than the step's
`ExpireAfter` (an ISO-8601 duration such as P30D, PT12H or T12H) is not used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

from pipelines.local.records import write_json_atomically

_DURATION = re.compile(r"^P?(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def parse_duration(text: str) -> dt.timedelta:
    """An ISO-8601 duration as SageMaker accepts it (years as 365 days, months as 30)."""
    match = _DURATION.match(str(text).upper())
    if not match or not any(match.groups()):
        raise ValueError(f"ExpireAfter {text!r} is not an ISO-8601 duration like P30D or PT12H")
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return dt.timedelta(days=365 * years + 30 * months + 7 * weeks + days, hours=hours, minutes=minutes,
                        seconds=seconds)


def cache_key(step_type: str, arguments: dict) -> str:
    canonical = json.dumps({"Type": step_type, "Arguments": arguments}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class StepCache:
    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir) / "cache"

    def lookup(self, key: str, expire_after: str | None) -> dict | None:
        """The cached entry for `key` if it is younger than `expire_after` (no limit when None)."""
        limit = parse_duration(expire_after) if expire_after else None
        path = self.root / f"{key}.json"
        if not path.exists():
            return None
        entry = json.loads(path.read_text())
        age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(entry["CreatedAt"])
        return None if limit is not None and age > limit else entry

    def store(self, key: str, execution_id: str, step_name: str, properties: dict) -> None:
        write_json_atomically(self.root / f"{key}.json", {
            "CreatedAt": dt.datetime.now(dt.UTC).isoformat(), "PipelineExecutionId": execution_id,
            "StepName": step_name, "Properties": properties})
