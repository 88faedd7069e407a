"""Helpers shared by the streamer's tests."""

from __future__ import annotations


def database_uri(mongo_uri: str, database: str) -> str:
    """`mongo_uri` with its path set to `database` (query options kept)."""
    base, _, query = mongo_uri.partition("?")
    host = "/".join(base.split("/")[:3])
    return f"{host}/{database}" + (f"?{query}" if query else "")
