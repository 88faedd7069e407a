"""The quality gate as the definition writes it: each check's decision on evaluation.json's numbers.

The conditions are taken from the built definition and evaluated by the local engine's Condition runner with
the definition's default parameters, so what is tested is what SageMaker would decide.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from pipelines.contract import GATE_STEPS
from pipelines.local.expressions import Resolver
from pipelines.local.steps.condition import evaluate as holds
from processing import evaluate as ev

ARGS = dict(region="us-east-1", role_arn="arn:aws:iam::123456789012:role/p", bucket="b", pipeline_name="lt",
            model_package_group="g", prefix="lt")


@pytest.fixture(scope="module")
def gate() -> tuple[dict, dict]:
    """(each check's conditions, the default parameters)."""
    from pipelines.definition import build_definition

    definition = json.loads(build_definition(**ARGS))
    checks, pending = {}, list(definition["Steps"])
    while pending:
        step = pending.pop()
        if step["Type"] == "Condition":
            checks[step["Name"]] = step["Arguments"]["Conditions"]
            pending += step["Arguments"]["IfSteps"] + step["Arguments"]["ElseSteps"]
    return checks, {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}


@pytest.fixture(scope="module")
def passing() -> dict:
    """evaluation.json of a skilled challenger beside a baseline and a champion that are no better."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 2000)
    models = {}
    for name in ("challenger", "baseline", "champion"):
        scores = np.clip(0.5 * labels + 0.5 * rng.random(2000), 0, 1)
        models[name] = (scores, (scores > 0.6).astype(np.int64))
    trades = {"label": labels, "open_ms": np.arange(2000) * 30_000, "close_ms": np.arange(2000) * 30_000 + 1}
    return ev.evaluate(trades, models, dependence_seconds=60.0, target_recall=0.25, champion_package_arn="arn:c")


def decisions(gate, evaluation: dict, **parameters) -> dict[str, bool]:
    checks, defaults = gate
    resolver = Resolver({**defaults, **parameters}, {},
                        lambda step: {"PropertyFiles": {"EvaluationReport": evaluation}})
    return {name: all(holds(condition, log=lambda line: None) for condition in resolver.resolve(conditions))
            for name, conditions in checks.items()}


def changed(evaluation: dict, path: str, value) -> dict:
    edited = copy.deepcopy(evaluation)
    *parents, last = path.split(".")
    target = edited
    for key in parents:
        target = target[key]
    target[last] = value
    return edited


def test_a_skilled_challenger_passes_every_check(gate, passing):
    assert decisions(gate, passing) == dict.fromkeys(GATE_STEPS, True)


@pytest.mark.parametrize("path, value, failing", [
    ("vs_champion.shortfall.lower", 0.01, "CheckChampion"),  # the model in service is significantly better
    ("lift.lower", 0.049, "CheckLift"),  # just short of MinLift 0.05
    ("lift.lower", 0.0, "CheckLift"),  # what a model flagging every trade gets
    ("vs_baseline.shortfall.lower", 0.001, "CheckBaseline"),  # the logistic regression is significantly better
    ("binary_classification_metrics.precision.lower", 0.39, "CheckPrecision"),  # below MinPrecision 0.4
])
def test_each_check_fails_on_its_own_number(gate, passing, path, value, failing):
    assert decisions(gate, changed(passing, path, value)) == {name: name != failing for name in GATE_STEPS}


def test_the_bounds_are_inclusive(gate, passing):
    at_the_bounds = changed(changed(passing, "lift.lower", 0.05), "binary_classification_metrics.precision.lower", 0.4)
    assert all(decisions(gate, at_the_bounds).values())


def test_with_no_champion_there_is_nothing_to_fall_short_of_whatever_the_tolerance(gate, passing):
    first = changed(passing, "vs_champion", ev._no_champion())
    assert decisions(gate, first, MaxShortfallVsChampion=-0.5)["CheckChampion"] is True
    assert decisions(gate, passing, MaxShortfallVsChampion=-0.5)["CheckChampion"] is False  # must beat it by 0.5
