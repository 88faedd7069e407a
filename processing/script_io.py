"""What the evaluation-side processing scripts share: the one-line input error, the recall argument, and
output files that appear whole or not at all. Standard library only: it ships next to the scripts."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

PREDICTIONS_FILE = "test_features.csv.out"  # what Batch Transform writes for test_features.csv


class InputError(ValueError):
    """An input that cannot be used; the message is one line naming the file and what to do."""


def recall_fraction(text: str) -> float:
    """argparse type for a target recall: above 0, at most 1."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, not {text}")
    return value


def write_atomically(directory: str | os.PathLike, name: str, write: Callable[[TextIO], None]) -> Path:
    """directory/name as `write` fills it, renamed into place only once complete; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=f".{name}-", delete=False) as out:
        write(out)
    os.replace(out.name, directory / name)
    return directory / name
