"""The baseline for bench_preprocess: the same features and split, computed per trade with pandas as the seed did.

    python bench/naive_preprocess.py --input-dir D --output-dir O

For each trade: filter the ticks up to its open, forward-fill their mids onto
the 600 one-second lag times, subtract the mid at the open; then the same
purged and embargoed split, and pandas' to_csv. Correct (bench_preprocess checks
that its files hold the same numbers), but O(trades × ticks) with a pandas
round-trip per trade. It does not validate the batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from processing import batch_contract as contract
from processing import preprocess


def trade_features(prices: pd.DataFrame, open_ts: int, lookback_seconds: int) -> list[float]:
    history = prices[prices["ts"] <= open_ts].set_index("ts")
    mids = (history["bid"] + history["offer"]) / 2
    lagged = mids.reindex(open_ts - 1000 * np.arange(1, lookback_seconds + 1), method="ffill")
    now = mids.iloc[-1]
    return [*(history[list(contract.PRICE_FIELDS)].iloc[-1] - now), *(lagged - now)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-dir", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--lookback-seconds", type=int, default=contract.LOOKBACK_SECONDS)
    args = parser.parse_args(argv)
    batch = contract.read_batch(args.input_dir)
    prices, trades = pd.DataFrame(batch.prices), pd.DataFrame(batch.trades)
    rows = [trade_features(prices, t, args.lookback_seconds) for t in trades["open_ts"]]
    features = pd.DataFrame(rows, columns=contract.feature_names(args.lookback_seconds))
    labels = trades["label"].astype(int)
    split = preprocess.split_trades(trades["open_ts"].to_numpy(), trades["close_ts"].to_numpy(), labels.to_numpy(),
                                    ~features.isna().any(axis=1).to_numpy(), args.lookback_seconds, 0.7, 0.15)
    out = Path(args.output_dir)
    for name, path in (("train", preprocess.TRAIN_CSV), ("validation", preprocess.VALIDATION_CSV)):
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        pd.concat([labels, features], axis=1).iloc[split.rows[name]].to_csv(out / path, header=False, index=False)
    (out / preprocess.TEST_FEATURES_CSV).parent.mkdir(parents=True, exist_ok=True)
    features.iloc[split.rows["test"]].to_csv(out / preprocess.TEST_FEATURES_CSV, header=False, index=False)
    test = trades.iloc[split.rows["test"]]
    pd.DataFrame({"trade_id": test["trade_id"], "open_ms": test["open_ts"], "close_ms": test["close_ts"],
                  "label": test["label"].astype(int), "pnl": test["pnl"]}).to_csv(out / preprocess.TEST_TRADES_CSV,
                                                                                 index=False)
    print(f"naive_preprocess: {len(trades):,} trades: " + ", ".join(f"{k} {len(v):,}" for k, v in split.rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
