"""The README's cost table is what bench/bench_cost.py computes from its cited inputs."""

import json
from pathlib import Path

from bench.bench_cost import INPUTS, table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_shows_the_cost_table_the_inputs_give():
    rows = table(json.loads(INPUTS.read_text())).splitlines()
    readme = README.read_text().splitlines()
    missing = [row for row in rows if row.startswith("| 10") and row not in readme]
    assert len(rows) > 6 and not missing, f"README rows out of date (run bench/bench_cost.py): {missing}"
