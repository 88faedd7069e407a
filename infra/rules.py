"""The EventBridge rules and the live-lift alarm, read from the CloudFormation template (the one source of truth).

The local stack applies the very same event patterns and pipeline parameter mapping as AWS does, by
reading them here rather than retyping them:

- `manifest_rule_pattern(bucket, epic)`: S3 "Object Created" in the bucket, key `batches/<epic>/*.manifest` (the
  template has one such rule per epic, `Fn::ForEach` over its Epics; `epic="*"` gives the pattern of them all);
- `approval_rule_pattern(group)`: "SageMaker Model Package State Change" for the epics' groups `<group>-…`, Approved;
- `pipeline_parameter_mapping(epic)`: pipeline parameter -> what the epic's rule passes: a JSON path into the event
  (EventBridge's dynamic target parameters: the whole value is the path), or a constant (the epic);
- `live_lift_alarm(endpoint, epic)`: the epic's live-lift alarm's PutMetricAlarm arguments (one per epic, on its
  endpoint, `Fn::ForEach` again);
- `alarm_rule_pattern(endpoint)`: any epic's live-lift alarm's "CloudWatch Alarm State Change" to ALARM.
"""

from __future__ import annotations

import copy
import functools
import re

EACH_EPIC = "Fn::ForEach::EachEpic"  # one manifest rule (and endpoint alarms) per epic
MONITORED_EPIC = "Fn::ForEach::MonitoredEpic"  # one monitor schedule and live-lift alarm per epic
APPROVAL_RULE = "ApprovalRule"
ALARM_RULE = "LiveLiftAlarmRule"


@functools.cache
def _template() -> dict:
    from infra.template import load_template

    return load_template()


def _resources() -> dict:
    return _template()["Resources"]


def _resolve(node, refs: dict[str, str]):
    """Replace {"Ref": name} by refs[name], a plain {"Fn::Sub": "…${name}…"} by the names' values, and apply
    Fn::Join, Fn::Split and Fn::Select (the template's epic slug); any other intrinsic function is an error (what the
    local stack reads must stay plain)."""
    if isinstance(node, list):
        return [_resolve(item, refs) for item in node]
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return refs[node["Ref"]]
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            return re.sub(r"\$\{(\w+)\}", lambda match: str(refs[match.group(1)]), node["Fn::Sub"])
        if set(node) == {"Fn::Join"}:
            separator, items = node["Fn::Join"]
            return separator.join(_resolve(items, refs))
        if set(node) == {"Fn::Split"}:
            separator, text = node["Fn::Split"]
            return _resolve(text, refs).split(separator)
        if set(node) == {"Fn::Select"}:
            index, items = node["Fn::Select"]
            return _resolve(items, refs)[int(index)]
        if any(key.startswith("Fn::") for key in node):
            raise ValueError(f"event patterns may only use !Ref, not {sorted(node)}")
        return {key: _resolve(value, refs) for key, value in node.items()}
    return node


def _pattern(rule: str, refs: dict[str, str]) -> dict:
    return _resolve(copy.deepcopy(_resources()[rule]["Properties"]["EventPattern"]), refs)


def _per_epic(loop: str, resource: str) -> tuple[str, dict]:
    """(the loop's identifier, the properties of the resource it makes per epic), from the template's Fn::ForEach."""
    identifier, _, fragment = _resources()[loop]
    return identifier, fragment[f"{resource}&{{{identifier}}}"]["Properties"]


def _epic_rule() -> tuple[str, dict]:
    return _per_epic(EACH_EPIC, "ManifestRule")


def manifest_rule_pattern(bucket: str, epic: str = "*") -> dict:
    """The event pattern that starts the pipeline on the epic's batches: a batch manifest created in `bucket`."""
    identifier, properties = _epic_rule()
    return _resolve(copy.deepcopy(properties["EventPattern"]), {"DataBucket": bucket, identifier: epic})


def approval_rule_pattern(group: str) -> dict:
    """The event pattern that triggers the deploy Lambda: a package of `group` approved."""
    return _pattern(APPROVAL_RULE, {"ModelPackageGroupName": group})


def pipeline_parameter_mapping(epic: str) -> dict[str, str]:
    """Pipeline parameter name -> JSON path into the event, or constant, as the epic's rule's pipeline target
    declares."""
    identifier, properties = _epic_rule()
    (target,) = [t for t in properties["Targets"] if "SageMakerPipelineParameters" in t]
    return {parameter["Name"]: _resolve(parameter["Value"], {identifier: epic})
            for parameter in target["SageMakerPipelineParameters"]["PipelineParameterList"]}


def live_lift_alarm(endpoint: str, epic: str) -> dict:
    """PutMetricAlarm's arguments for the live-lift alarm on the epic's endpoint (`endpoint`: the endpoints' prefix;
    the template's default window count)."""
    windows = _template()["Parameters"]["LiveLiftAlarmWindows"]["Default"]
    identifier, properties = _per_epic(MONITORED_EPIC, "LiveLiftAlarm")
    properties = _resolve(copy.deepcopy(properties),
                          {"EndpointName": endpoint, identifier: epic, "LiveLiftAlarmWindows": windows})
    return {**properties, "EvaluationPeriods": int(windows), "DatapointsToAlarm": int(windows)}


def alarm_rule_pattern(endpoint: str) -> dict:
    """The event pattern that triggers the act-on-alarm Lambda: an epic's live-lift alarm (on an endpoint
    `<endpoint>-<epic slug>`) went into ALARM."""
    return _pattern(ALARM_RULE, {"EndpointName": endpoint})
