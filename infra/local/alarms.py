"""CloudWatch metric alarms evaluated on one machine (moto 5.2.5 stores alarms and metric data, never evaluates
them, and emits no "CloudWatch Alarm State Change" events; a new alarm starts OK, not INSUFFICIENT_DATA).

`evaluate_alarms` does what CloudWatch does at each evaluation, through the CloudWatch API only: for every metric
alarm it reads the last `EvaluationPeriods` periods of its metric with GetMetricData (its statistic, its period),
counts the breaching data points (missing ones as `TreatMissingData` says), and decides ALARM (at least
`DatapointsToAlarm` breaching), OK, or INSUFFICIENT_DATA (no data, treated as missing). On a change of state it
calls SetAlarmState and puts the state-change event, in CloudWatch's shape, on the default bus, where the local
dispatcher's rules deliver it. The local stack runs it after each monitoring run.
"""

from __future__ import annotations

import json
import operator
from datetime import UTC, datetime, timedelta

ALARM_STATE_CHANGE = "CloudWatch Alarm State Change"
COMPARISONS = {"LessThanThreshold": operator.lt, "LessThanOrEqualToThreshold": operator.le,
               "GreaterThanThreshold": operator.gt, "GreaterThanOrEqualToThreshold": operator.ge}


def _stamp(when: datetime) -> str:
    """CloudWatch's timestamp format in alarm events: 2026-12-04T23:40:00.000+0000."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def _metric(alarm: dict) -> dict:
    return {"Namespace": alarm["Namespace"], "MetricName": alarm["MetricName"],
            "Dimensions": alarm.get("Dimensions", [])}


def evaluate(cloudwatch, alarm: dict, now: datetime) -> tuple[str, str, dict]:
    """The alarm's state at `now`: (state, reason, reason data)."""
    periods, period = alarm["EvaluationPeriods"], alarm["Period"]
    start = now - timedelta(seconds=periods * period)
    result = cloudwatch.get_metric_data(MetricDataQueries=[{
        "Id": "m", "MetricStat": {"Metric": _metric(alarm), "Period": period, "Stat": alarm["Statistic"]}}],
        StartTime=start, EndTime=now)["MetricDataResults"][0]
    values = result["Values"][:periods]
    compare = COMPARISONS[alarm["ComparisonOperator"]]
    breaching = sum(compare(value, alarm["Threshold"]) for value in values)
    missing = periods - len(values)
    treat = alarm.get("TreatMissingData", "missing")
    if treat == "breaching":
        breaching += missing
    needed = alarm.get("DatapointsToAlarm") or periods
    data = {"version": "1.0", "queryDate": _stamp(now), "startDate": _stamp(start), "statistic": alarm["Statistic"],
            "period": period, "recentDatapoints": values, "threshold": alarm["Threshold"]}
    if breaching >= needed:
        return "ALARM", (f"Threshold Crossed: {breaching} out of the last {periods} datapoints were "
                         f"{alarm['ComparisonOperator']} the threshold ({alarm['Threshold']})"), data
    if not values and treat in ("missing", "ignore"):
        return "INSUFFICIENT_DATA", f"no datapoints in the last {periods} periods", data
    return "OK", f"{breaching} out of the last {periods} datapoints breaching; {needed} needed", data


def state_change_event(alarm: dict, state: str, reason: str, data: dict, now: datetime) -> dict:
    """A PutEvents entry shaped like CloudWatch's "CloudWatch Alarm State Change" event."""
    detail = {
        "alarmName": alarm["AlarmName"],
        "state": {"value": state, "reason": reason, "reasonData": json.dumps(data), "timestamp": _stamp(now)},
        "previousState": {"value": alarm["StateValue"], "reason": alarm.get("StateReason", ""),
                          "timestamp": _stamp(alarm.get("StateUpdatedTimestamp") or now)},
        "configuration": {"description": alarm.get("AlarmDescription", ""), "metrics": [{
            "id": "m", "returnData": True, "metricStat": {
                "metric": {"namespace": alarm["Namespace"], "name": alarm["MetricName"],
                           "dimensions": {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}},
                "period": alarm["Period"], "stat": alarm["Statistic"]}}]},
    }
    return {"Source": "aws.cloudwatch", "DetailType": ALARM_STATE_CHANGE, "Resources": [alarm["AlarmArn"]],
            "Detail": json.dumps(detail), "Time": now}


def evaluate_alarms(cloudwatch, events, now: datetime | None = None) -> list[dict]:
    """Evaluate every metric alarm once; SetAlarmState and an event for each that changed state. Returns the
    events put."""
    now = now or datetime.now(UTC)
    changes = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"]):
        for alarm in page["MetricAlarms"]:
            state, reason, data = evaluate(cloudwatch, alarm, now)
            if state == alarm["StateValue"]:
                continue
            cloudwatch.set_alarm_state(AlarmName=alarm["AlarmName"], StateValue=state, StateReason=reason,
                                       StateReasonData=json.dumps(data))
            changes.append(state_change_event(alarm, state, reason, data, now))
    for change in changes:
        events.put_events(Entries=[change])
    return changes
