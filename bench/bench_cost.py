"""Cost on paper: AWS cost per retraining run and per day for 1, 10 and 100 instruments (no AWS calls).

Reads bench/cost_inputs.json (prices, per-job start-up, the pipeline's jobs, per-step seconds measured by the local
engine, the always-on parts, the bot's trade rate; each with its source) and prints the README's table. A figure
the inputs mark unverified is flagged with `*` in the output.
"""

from __future__ import annotations

import json
from pathlib import Path

INPUTS = Path(__file__).with_name("cost_inputs.json")
INSTRUMENTS = (1, 10, 100)
SIZES = {"10k": 10_000, "100k": 100_000}


def run_cost(inputs: dict, size: str) -> tuple[float, float]:
    """(dollars, billed instance-hours) of one pipeline execution: every job billed its start-up plus its work."""
    price = inputs["prices_usd_per_hour"]["ml.m5.xlarge job"]["value"]
    overhead = inputs["per_job_overhead_s"]["value"]
    seconds = inputs["local_step_seconds"][size]
    hours = sum(count * (overhead + seconds[step]) for step, count in inputs["pipeline"]["jobs"].items()) / 3600
    return hours * price, hours


def run_wall_minutes(inputs: dict, size: str) -> float:
    """Rough wall time of one execution: Preprocess, then Tuning in rounds (FitBaseline beside it), one Transform
    round, Evaluate; each job its start-up plus its work."""
    overhead = inputs["per_job_overhead_s"]["value"]
    seconds = inputs["local_step_seconds"][size]
    jobs = inputs["pipeline"]["jobs"]
    training = "TuneLinearLearner (training jobs)"
    rounds = -(-jobs[training] // inputs["pipeline"]["max_parallel_training_jobs"])
    tuning = rounds * (overhead + seconds[training])
    transform = overhead + max(seconds["TransformTest"], seconds["TransformChampion"])
    chain = [overhead + seconds["Preprocess"], max(tuning, overhead + seconds["FitBaseline"]), transform,
             overhead + seconds["EvaluateBestModel"]]
    return sum(chain) / 60


def always_on_per_day(inputs: dict, instruments: int) -> tuple[float, float]:
    """(endpoint, streamer) dollars per day for this many instruments."""
    prices, parts = inputs["prices_usd_per_hour"], inputs["always_on"]
    endpoint = instruments * parts["endpoint_instances_per_instrument"] * prices["ml.m5.large endpoint"]["value"]
    tasks = -(-instruments // parts["instruments_per_streamer_task"])
    streamer = tasks * (parts["streamer_vcpu"] * prices["fargate vCPU"]["value"]
                        + parts["streamer_gb"] * prices["fargate GB"]["value"])
    return endpoint * 24, streamer * 24


def batches_per_day(inputs: dict, trades: int) -> float:
    """Batches one instrument lands per day: one trade opened (and, in the steady state, closed) per open_every_s."""
    return 86_400 / inputs["trade_rate"]["open_every_s"] / trades


def table(inputs: dict) -> str:
    flag = {name: "" if p["verified"] else "*" for name, p in inputs["prices_usd_per_hour"].items()}
    job, endpoint = flag["ml.m5.xlarge job"], flag["ml.m5.large endpoint"]
    run_flag = job or ("" if inputs["per_job_overhead_s"]["verified"] else "*")
    lines = ["| batch | instruments | batches/day | per run | run wall | retraining/day | endpoint/day | "
             "streamer/day | total/day |", "|---|---|---|---|---|---|---|---|---|"]
    for size, trades in SIZES.items():
        dollars, hours = run_cost(inputs, size)
        per_instrument = batches_per_day(inputs, trades)
        for n in INSTRUMENTS:
            endpoint_day, streamer_day = always_on_per_day(inputs, n)
            retraining_day = n * per_instrument * dollars
            lines.append(
                f"| {size} | {n} | {n * per_instrument:.2f} | ${dollars:.3f}{run_flag} ({hours:.2f} instance-h) | "
                f"{run_wall_minutes(inputs, size):.0f} min | ${retraining_day:.2f}{run_flag} | "
                f"${endpoint_day:.2f}{endpoint} | ${streamer_day:.2f} | "
                f"${retraining_day + endpoint_day + streamer_day:.2f}* |")
    lines.append("\n`*` rests on a figure bench/cost_inputs.json marks unverified (see its sources).")
    return "\n".join(lines)


def main() -> None:
    print(table(json.loads(INPUTS.read_text())))


if __name__ == "__main__":
    main()
