"""The names of an epic's resources: its model package group and its endpoint, `<base>-<epic slug>`, and where
the streamer looks for its export requests.

Standard library only; shipped in the Lambda zip beside the handlers (FindChampion names the group it registers
into, the deploy Lambda the endpoint of a group) and imported by the rest of livetrain, so the rule is written once.

The slug is the epic with each "." made "-" (IG epics look like `CS.D.BITCOIN.CFD.IP` → `CS-D-BITCOIN-CFD-IP`):
SageMaker names allow [a-zA-Z0-9-] up to 63 characters, and CloudFormation computes the same slug with
`!Join ["-", !Split [".", epic]]` (infra/template.yaml).
"""

from __future__ import annotations

import re


class EpicError(ValueError):
    """An epic list or name no resource can be named after; the `livetrain` command prints it as one line."""


EPIC_PATTERN = re.compile(r"[A-Za-z0-9]+(\.[A-Za-z0-9]+)*")  # letters and digits, in parts separated by dots
MAX_NAME_LENGTH = 63  # SageMaker's model package group and endpoint names


def epic_slug(epic: str) -> str:
    """`CS.D.BITCOIN.CFD.IP` → `CS-D-BITCOIN-CFD-IP`; EpicError for an epic the rule cannot name."""
    if not EPIC_PATTERN.fullmatch(epic or ""):
        raise EpicError(f"epic {epic!r} is not letters and digits in parts separated by dots (e.g. "
                        "CS.D.BITCOIN.CFD.IP): no SageMaker name can be made from it")
    return epic.replace(".", "-")


def slug_epic(slug: str) -> str:
    """The epic `slug` was made from: epics hold no "-", so each "-" was a "."; EpicError when no epic makes it."""
    epic = slug.replace("-", ".")
    epic_slug(epic)
    return epic


def parse_epics(values: list[str]) -> tuple[str, ...]:
    """--epic values (each one epic or a comma-separated list, as LIVETRAIN_EPIC may be) as distinct epics;
    EpicError for an empty or repeated one, or one no SageMaker name can be made from."""
    epics = [epic.strip() for value in values for epic in value.split(",")]
    if "" in epics:
        raise EpicError(f"--epic {','.join(values)}: an empty epic; give names separated by commas, e.g. "
                        f"--epic CS.D.BITCOIN.CFD.IP,CS.D.ETHUSD.CFD.IP")
    repeated = sorted({epic for epic in epics if epics.count(epic) > 1})
    if repeated:
        raise EpicError(f"--epic: {', '.join(repeated)} given more than once; name each epic once")
    for epic in epics:
        epic_slug(epic)
    return tuple(epics)


def export_requests_prefix(prefix: str, epic: str) -> str:
    """Where the act-on-alarm Lambda asks the streamer's lane of `epic` for a batch now (`prefix`: the pipeline's)."""
    return f"{prefix}/export-requests/{epic}/"


def epic_name(base: str, epic: str) -> str:
    """The epic's model package group (base: the configured group name) or endpoint (base: the configured
    endpoint name): `<base>-<slug>`; EpicError when that is longer than SageMaker allows."""
    name = f"{base}-{epic_slug(epic)}"
    if len(name) > MAX_NAME_LENGTH:
        raise EpicError(f"{name!r} is {len(name)} characters, over SageMaker's {MAX_NAME_LENGTH}: "
                        f"shorten the base name {base!r}")
    return name
