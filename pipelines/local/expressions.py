"""Pipeline expressions as a definition writes them, and the property paths they name.

    {"Get": "Parameters.MinPrecision"}
    {"Get": "Execution.PipelineExecutionId"}            (and StartDateTime, CurrentDateTime, PipelineName, …)
    {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
    {"Std:Join": {"On": "/", "Values": [...]}}
    {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Report"}, "Path": "a.b[0].c"}}

A list indexed by a string (`Outputs['train']`) picks the element whose name field
(OutputName, ChannelName, …) has that value, as SageMaker's property maps do.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable

from pipelines.local.errors import ExpressionError

_TOKEN = re.compile(r"""\.?([\w-]+)|\[(-?\d+)\]|\[\s*(['"])(.*?)\3\s*\]""")
NAME_FIELDS = ("OutputName", "InputName", "ChannelName", "PropertyFileName", "MetricName", "Name")


def parse_path(path: str) -> list[str | int]:
    """`A.B['x'][0].C` → ["A", "B", "x", 0, "C"]."""
    tokens: list[str | int] = []
    position = 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if not match:
            raise ExpressionError(f"cannot read path {path!r} at {path[position:]!r}")
        name, index, _, key = match.groups()
        tokens.append(name if name is not None else int(index) if index is not None else key)
        position = match.end()
    return tokens


def follow(value, path: str, where: str):
    """The value at `path` inside nested dicts and lists; ExpressionError naming `where` if absent."""
    for token in parse_path(path):
        indexable = isinstance(value, list) and isinstance(token, int) and -len(value) <= token < len(value)
        if indexable or (isinstance(value, dict) and token in value):
            value = value[token]
        elif isinstance(value, list) and isinstance(token, str) and _named(value, token) is not None:
            value = _named(value, token)
        else:
            raise ExpressionError(f"{where}: nothing at {token!r} of {path!r}")
    return value


def _named(items: list, name: str):
    for item in items:
        if isinstance(item, dict) and any(item.get(field) == name for field in NAME_FIELDS):
            return item
    return None


def referenced_steps(value) -> set[str]:
    """Names of the steps whose properties `value` reads (its data dependencies)."""
    if isinstance(value, list):
        return set().union(*map(referenced_steps, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    reference = value.get("Get")
    if len(value) == 1 and isinstance(reference, str) and reference.startswith("Steps."):
        return {reference.split(".")[1]}
    return set().union(*map(referenced_steps, value.values())) if value else set()


def as_text(value) -> str:
    """A resolved value as Std:Join writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    if value is None:
        raise ExpressionError("Std:Join got a value that does not exist (null)")
    return str(value)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Resolver:
    """Replaces every expression in a step's arguments by its value.

    `step_properties(name)` returns a finished step's properties (raising ExpressionError
    if it has none); `read_json(uri)` reads a JSON document from S3 for `Std:JsonGet` with S3Uri.
    """

    def __init__(self, parameters: dict, execution: dict, step_properties: Callable[[str], dict],
                 read_json: Callable[[str], object] | None = None):
        self.parameters = parameters
        self.execution = execution
        self.step_properties = step_properties
        self.read_json = read_json

    def resolve(self, value):
        """`value` with every expression replaced by its value."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, body),) = value.items()
            if key == "Get":
                return self.get(body)
            if key == "Std:Join":
                values = self.resolve(body.get("Values", []))
                return str(body.get("On", "")).join(as_text(v) for v in values)
            if key == "Std:JsonGet":
                return self.json_get(body)
        return {k: self.resolve(v) for k, v in value.items()}

    def get(self, reference: str):
        if not isinstance(reference, str):
            raise ExpressionError(f"Get takes a string, not {reference!r}")
        head, _, rest = reference.partition(".")
        if head == "Parameters":
            if rest not in self.parameters:
                raise ExpressionError(f"{reference}: the definition declares no parameter {rest!r}")
            return self.parameters[rest]
        if head == "Execution":
            if rest == "CurrentDateTime":
                return now_iso()
            if rest not in self.execution:
                raise ExpressionError(f"{reference}: unknown execution variable; local mode knows "
                                      f"{', '.join(sorted([*self.execution, 'CurrentDateTime']))}")
            return self.execution[rest]
        if head == "Steps":
            step, _, path = rest.partition(".")
            return follow(self.step_properties(step), path, reference)
        raise ExpressionError(f"cannot resolve {{'Get': {reference!r}}}: expected Parameters., Execution. or Steps.")

    def json_get(self, body: dict):
        path = self.resolve(body.get("Path"))
        if "PropertyFile" in body:
            document = self.resolve(body["PropertyFile"])
        elif "S3Uri" in body and self.read_json:
            document = self.read_json(self.resolve(body["S3Uri"]))
        else:
            raise ExpressionError(f"Std:JsonGet needs a PropertyFile or an S3Uri: {body!r}")
        if not isinstance(path, str):
            raise ExpressionError(f"Std:JsonGet needs a Path string: {body!r}")
        return follow(document, path, f"Std:JsonGet {path!r}")
