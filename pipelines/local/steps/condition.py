"""Condition step: evaluates its Conditions (all must hold) with resolved values; exposes `Outcome`.

Condition types as the SDK writes them: Equals, GreaterThan, GreaterThanOrEqualTo,
LessThan, LessThanOrEqualTo ({LeftValue, RightValue}), In ({QueryValue, Values}),
Not ({Condition}), Or ({Conditions}). The engine runs IfSteps or ElseSteps from `Outcome`.
"""

from __future__ import annotations

import operator

from pipelines.local.errors import StepFailure
from pipelines.local.steps.base import Job

COMPARISONS = {
    "Equals": ("==", operator.eq),
    "GreaterThan": (">", operator.gt),
    "GreaterThanOrEqualTo": (">=", operator.ge),
    "LessThan": ("<", operator.lt),
    "LessThanOrEqualTo": ("<=", operator.le),
}


def run(arguments: dict, job: Job) -> dict:
    outcome = all([evaluate(condition, job.log) for condition in arguments.get("Conditions", [])])
    job.log(f"Outcome: {outcome}")
    return {"Outcome": outcome}


def evaluate(condition: dict, log=print) -> bool:
    """One condition's truth value; every comparison is logged with its values."""
    kind = condition.get("Type")
    if kind in COMPARISONS:
        symbol, compare = COMPARISONS[kind]
        left, right = _comparable(condition["LeftValue"], condition["RightValue"], kind)
        result = bool(compare(left, right))
        log(f"{left!r} {symbol} {right!r}: {result}")
        return result
    if kind == "In":
        result = condition["QueryValue"] in condition["Values"]
        log(f"{condition['QueryValue']!r} in {condition['Values']!r}: {result}")
        return result
    if kind == "Not":
        return not evaluate(condition["Condition"], log)
    if kind == "Or":
        return any([evaluate(c, log) for c in condition["Conditions"]])
    raise StepFailure(f"unknown condition type {kind!r}; local mode evaluates "
                      f"{', '.join([*COMPARISONS, 'In', 'Not', 'Or'])}")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(left, right, kind: str):
    if (_is_number(left) and _is_number(right)) or type(left) is type(right):
        return left, right
    if kind == "Equals":
        return left, right  # values of different types are simply not equal
    raise StepFailure(f"{kind} cannot compare {left!r} ({type(left).__name__}) with {right!r} "
                      f"({type(right).__name__})")
