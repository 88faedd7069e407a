"""The local alarm evaluator (moto evaluates no alarm): the template's live-lift alarm over metric data in moto's
CloudWatch, its state set through the API, its state change delivered by the local dispatcher's rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from infra.local.alarms import evaluate_alarms
from infra.local.dispatcher import Dispatcher, LocalRule
from infra.local.monitoring import MonitorSettings
from infra.rules import alarm_rule_pattern, live_lift_alarm
from processing.monitor import NAMESPACE

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def alarm(aws):
    """The live-lift alarm on the endpoint "lt-ep" of epic "ep", as the local stack provisions it; its description."""
    cloudwatch = aws.client("cloudwatch")
    cloudwatch.put_metric_alarm(**live_lift_alarm("lt", "ep"))
    return cloudwatch.describe_alarms(AlarmNames=["lt-ep-live-lift"])["MetricAlarms"][0]


def publish(cloudwatch, *lower_bounds: float, now: datetime = NOW, endpoint: str = "lt-ep") -> None:
    """LiftLowerBound of the model in service on `endpoint`, one window a day, the last one ending just before
    `now`."""
    cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=[
        {"MetricName": "LiftLowerBound", "Value": value,
         "Timestamp": now - (len(lower_bounds) - i) * DAY + timedelta(hours=1),
         "Dimensions": [{"Name": "Endpoint", "Value": endpoint}]} for i, value in enumerate(lower_bounds)])


def test_the_alarm_comes_from_the_template(alarm):
    assert (alarm["MetricName"], alarm["Statistic"]) == ("LiftLowerBound", "Minimum")
    assert alarm["Period"] == MonitorSettings("b", "p", "ep").window_hours * 3600  # one period = one window
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 2
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 0)
    # one rule for every epic's live-lift alarm: <endpoints' prefix>-<epic slug>-live-lift
    assert alarm_rule_pattern("lt")["detail"] == {"alarmName": [{"wildcard": "lt-*-live-lift"}],
                                                  "state": {"value": ["ALARM"]}}


def test_two_declining_windows_raise_the_alarm_once_and_the_event_reaches_the_rule(aws, alarm, tmp_path):
    cloudwatch = aws.client("cloudwatch")
    received = []
    dispatcher = Dispatcher(aws.client("events"), aws.client("sqs"), tmp_path)
    dispatcher.add_rule(LocalRule("live-lift", alarm_rule_pattern("lt"), received.append))

    publish(cloudwatch, -0.05)  # one declining window: not yet (moto starts an alarm OK; AWS: INSUFFICIENT_DATA)
    assert evaluate_alarms(cloudwatch, aws.client("events"), NOW) == []
    publish(cloudwatch, -0.03, -0.01)  # 2 consecutive declining windows (Minimum: the -0.05 of the last one)
    later = NOW + timedelta(minutes=5)
    assert len(evaluate_alarms(cloudwatch, aws.client("events"), later)) == 1
    assert evaluate_alarms(cloudwatch, aws.client("events"), later) == []  # no change, no event
    assert cloudwatch.describe_alarms(AlarmNames=["lt-ep-live-lift"])["MetricAlarms"][0]["StateValue"] == "ALARM"

    assert dispatcher.poll_once(wait_seconds=1) == 1
    [event] = received
    assert event["source"] == "aws.cloudwatch" and event["resources"] == [alarm["AlarmArn"]]
    detail = event["detail"]
    assert detail["alarmName"] == "lt-ep-live-lift" and detail["previousState"]["value"] == "OK"
    assert detail["state"]["value"] == "ALARM" and detail["state"]["timestamp"].startswith("2026-12-04T12:05:00")
    assert json.loads(detail["state"]["reasonData"])["recentDatapoints"] == [-0.05, -0.03]


def test_healthy_or_missing_windows_do_not_raise_it_and_a_recovery_is_announced(aws, alarm):
    cloudwatch, events = aws.client("cloudwatch"), aws.client("events")
    publish(cloudwatch, -0.05, 0.01)  # the last window is healthy
    assert evaluate_alarms(cloudwatch, events, NOW) == []
    # two days with no judged window (not enough data): missing counts as not breaching
    assert evaluate_alarms(cloudwatch, events, NOW + 3 * DAY) == []
    cloudwatch.set_alarm_state(AlarmName="lt-ep-live-lift", StateValue="ALARM", StateReason="test")
    [change] = evaluate_alarms(cloudwatch, events, NOW)
    detail = json.loads(change["Detail"])
    assert (detail["previousState"]["value"], detail["state"]["value"]) == ("ALARM", "OK")
