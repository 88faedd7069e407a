"""A pipeline definition's parameters: the values given on the command line, checked against their declared types.

One home for `pipeline start` (before StartPipelineExecution) and the local engine (`run-local`, the demo).
Standard library only.
"""

from __future__ import annotations

from livetrain.errors import UserError

PARAMETER_TYPES = {"String": str, "Integer": int, "Float": float, "Boolean": bool}


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """["Name=Value", …] → {"Name": "Value"}; UserError for an item without '='."""
    overrides = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param {item!r} must look like Name=Value")
        overrides[name] = value
    return overrides


def resolve_parameters(definition: dict, overrides: dict[str, str]) -> dict:
    """Every declared parameter's value: its default, or the override converted to its declared Type."""
    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise UserError(f"unknown parameter {unknown[0]!r}; the definition declares {', '.join(declared) or 'none'}")
    values = {}
    for name, parameter in declared.items():
        kind = parameter.get("Type", "String")
        if name in overrides:
            values[name] = _convert(name, kind, overrides[name])
        elif "DefaultValue" in parameter:
            values[name] = parameter["DefaultValue"]
        else:
            raise UserError(f"parameter {name} has no default value; pass --param {name}=VALUE")
    return values


def _convert(name: str, kind: str, text: str):
    try:
        if kind == "Boolean":
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        return PARAMETER_TYPES[kind](text)
    except ValueError:
        raise UserError(f"parameter {name} is {kind}; {text!r} is not a valid {kind.lower()}") from None
    except KeyError:
        raise UserError(f"parameter {name} has type {kind!r}, which livetrain does not know") from None


def with_batch_epic(definition: dict, overrides: dict[str, str]) -> dict[str, str]:
    """The overrides with Epic, when the definition declares it, set to the epic of the batch InputManifestKey names
    (`batches/<epic>/…`), as the epic's EventBridge rule sets it; UserError when an Epic given differs from it."""
    from pipelines.contract import manifest_epic

    epic = manifest_epic(overrides.get("InputManifestKey", ""))
    given = overrides.get("Epic")
    if epic and given and given != epic:
        raise UserError(f"Epic={given} but the batch {overrides['InputManifestKey']} is of epic {epic}: "
                        f"leave Epic out (it is taken from the batch) or pass Epic={epic}")
    declared = {parameter["Name"] for parameter in definition.get("Parameters", [])}
    if epic and not given and "Epic" in declared:
        return {**overrides, "Epic": epic}
    return overrides
