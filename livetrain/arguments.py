"""argparse value types that more than one part's commands use."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A count: a whole number above zero."""
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def port_number(text: str) -> int:
    """A TCP port; 0 lets the system choose a free one."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, not {text}")
    return value
