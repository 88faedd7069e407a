"""Live scoring: the model in service scores each trade at its opening; its label, once known, is ground truth.

The bot's hot path never waits on the endpoint. At a trade's opening it hands the trade id and the look-back
window of ticks to a worker thread, which computes the trade's features exactly as the pipeline does
(`processing.preprocess.feature_matrix`), calls InvokeEndpoint through the SageMaker Runtime API with
InferenceId = trade id, a bounded timeout and no retries, and keeps the answer. When the trade closes, the bot
stores the answer with the trade (`score`, `predicted_label`, `model_version`, `scored`). A trade without an
answer by then (endpoint down, slow or erroring; the queue full; opened before this run) is stored with
`scored: false`, and the gap is counted by reason and logged.

Each scored trade's label is ground truth for Model Monitor's model-quality merge: JSON Lines records
`{"groundTruthData": {"data": "1", "encoding": "CSV"}, "eventMetadata": {"eventId": <trade id>,
"modelVersion": <the serving package version, when known; an addition the merge ignores>}, "eventVersion": "0"}`
under s3://<bucket>/<prefix>/groundtruth/yyyy/mm/dd/hh/ (UTC hour of the write),
written by a background thread every few seconds. A crash loses at most the unwritten few seconds of ground
truth; the scored trades themselves are in MongoDB.

boto3 only (no SageMaker SDK).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from processing.batch_contract import LOOKBACK_SECONDS, PRICE_FIELDS

log = logging.getLogger("livetrain.stream")
GAPS = ("failed", "late", "skipped", "no_lookback", "opened_before_start")
_SKIPPED = None  # the pending entry of a trade left unscored at its opening (the gap is counted then)


@dataclass(frozen=True)
class ScoringSettings:
    endpoint_name: str
    bucket: str
    prefix: str  # ground truth under s3://<bucket>/<prefix>/groundtruth/
    timeout_s: float = 2.0  # an answer later than this is a gap
    workers: int = 2
    max_pending: int = 200  # requests waiting or running; beyond this a trade is left unscored (skipped)
    groundtruth_every_s: float = 5.0
    version_every_s: float = 30.0  # how often the serving model version is looked up (DescribeEndpoint)


def model_version(config_name: str) -> str:
    """The package version in an endpoint config name `<endpoint>-v<version>` (the deploy Lambda's naming)."""
    _, sep, version = config_name.rpartition("-v")
    return version if sep and version.isdigit() else config_name


def features_at(window: list[tuple], open_ts: int) -> np.ndarray | None:
    """One row of the training features for a trade opened at `open_ts`, from (ts, *PRICE_FIELDS) ticks; None
    without a tick at or before open_ts − LOOKBACK_SECONDS."""
    from processing.preprocess import Ticks, feature_matrix

    table = np.array(window, dtype=np.float64)
    if not len(table) or table[0, 0] > open_ts - 1000 * LOOKBACK_SECONDS:
        return None
    ticks = Ticks(table[:, 0].astype(np.int64), table[:, 1:])
    out = np.empty((1, len(PRICE_FIELDS) + LOOKBACK_SECONDS), np.int64)
    feature_matrix(ticks, np.array([open_ts], np.int64), LOOKBACK_SECONDS, out)
    return out[0] / 10.0**ticks.decimals


def ground_truth_record(trade_id: str, label: int, version: str | None) -> dict:
    """One line of Model Monitor's ground truth (see the module's docstring)."""
    metadata = {"eventId": trade_id, **({"modelVersion": version} if version else {})}
    return {"groundTruthData": {"data": str(label), "encoding": "CSV"}, "eventMetadata": metadata,
            "eventVersion": "0"}


class LiveScorer:
    """Scores trades at their opening on worker threads; hands the answers over at their closing."""

    def __init__(self, settings: ScoringSettings, runtime, s3, sagemaker=None, clock=time.time):
        self.settings, self.runtime, self.s3, self.sagemaker, self.clock = settings, runtime, s3, sagemaker, clock
        self._window: collections.deque = collections.deque()
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="scorer")
        self._pending: dict[str, Future] = {}
        self._running = 0
        self._lock = threading.Lock()
        self.scored = 0
        self.gaps = dict.fromkeys(GAPS, 0)
        self._last_error = ""
        self._version, self._version_at = None, -np.inf
        self._truth: list[tuple[float, str, int, str | None]] = []
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="groundtruth", daemon=True)
        self._writer.start()
        self.truth_written = 0

    # ------------------------------------------------------------ the bot's hot path

    def on_tick(self, tick) -> None:
        """Keep the look-back window: every tick since the last one at or before now − LOOKBACK_SECONDS."""
        window = self._window
        window.append((tick.ts, tick.bid, tick.offer, tick.mid_open, tick.high, tick.low))
        cutoff = tick.ts - 1000 * LOOKBACK_SECONDS
        while len(window) > 1 and window[1][0] <= cutoff:
            window.popleft()

    def on_open(self, trade) -> None:
        with self._lock:
            if self._running >= self.settings.max_pending:
                self.gaps["skipped"] += 1
                self._pending[trade.trade_id] = _SKIPPED
                return
            self._running += 1
        future = self._pool.submit(self._score, trade.trade_id, trade.open_ts, list(self._window))
        future.add_done_callback(self._finished)
        self._pending[trade.trade_id] = future

    def on_close(self, row: dict) -> dict:
        """The fields to store with the closed trade: its answer, or `scored: false` (and the gap counted)."""
        trade_id = row["trade_id"]
        answer = None
        if trade_id not in self._pending:
            self.gaps["opened_before_start"] += 1
        elif (future := self._pending.pop(trade_id)) is not _SKIPPED:
            if not future.done() or future.cancelled():
                self.gaps["late"] += 1
            elif isinstance(answer := future.result(), str):
                self.gaps[answer] += 1
        if not isinstance(answer, dict):
            return {"scored": False}
        self.scored += 1
        with self._lock:
            self._truth.append((self.clock(), trade_id, int(row["label"]), answer["model_version"]))
        return {"scored": True, **answer}

    # ------------------------------------------------------------ the workers

    def _finished(self, future: Future) -> None:
        with self._lock:
            self._running -= 1

    def _score(self, trade_id: str, open_ts: int, window: list[tuple]):
        """{"score", "predicted_label", "model_version"}, or the name of the gap."""
        row = features_at(window, open_ts)
        if row is None:
            return "no_lookback"
        try:
            response = self.runtime.invoke_endpoint(
                EndpointName=self.settings.endpoint_name, ContentType="text/csv", Accept="application/json",
                Body=",".join(map(repr, row.tolist())), InferenceId=trade_id)
            prediction = json.loads(response["Body"].read())["predictions"][0]
            answer = {"score": float(prediction["score"]), "predicted_label": int(prediction["predicted_label"]),
                      "model_version": self._model_version()}
        except Exception as exc:  # any failure of the endpoint is a gap, never a crash of the streamer
            self._note_failure(exc)
            return "failed"
        return answer

    def _note_failure(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        with self._lock:
            first = text != self._last_error
            self._last_error = text
        if first:
            log.warning("live scoring: endpoint %s did not answer (%s); trades stay unscored until it does",
                        self.settings.endpoint_name, text)

    def _model_version(self) -> str | None:
        """The serving package version, looked up at most every `version_every_s` (None without a client)."""
        if self.sagemaker is None:
            return None
        now = time.monotonic()
        if now - self._version_at >= self.settings.version_every_s:
            try:
                config = self.sagemaker.describe_endpoint(EndpointName=self.settings.endpoint_name)
                self._version = model_version(config["EndpointConfigName"])
            except Exception as exc:  # no permission, no control plane: the version stays unknown
                log.debug("live scoring: no model version (%s)", exc)
            self._version_at = now
        return self._version

    # ------------------------------------------------------------ ground truth

    def _write_loop(self) -> None:
        while not self._stop.wait(self.settings.groundtruth_every_s):
            self.write_ground_truth()

    def write_ground_truth(self) -> None:
        """Write the buffered labels, one object per UTC hour; on failure they stay buffered for the next try."""
        with self._lock:
            records, self._truth = self._truth, []
        hours: dict[str, list[str]] = {}
        for written_at, trade_id, label, version in records:
            hour = datetime.fromtimestamp(written_at, UTC).strftime("%Y/%m/%d/%H")
            hours.setdefault(hour, []).append(json.dumps(ground_truth_record(trade_id, label, version)))
        failed = []
        for hour, lines in hours.items():
            key = f"{self.settings.prefix}/groundtruth/{hour}/{int(self.clock() * 1000)}-{uuid.uuid4().hex[:8]}.jsonl"
            try:
                self.s3.put_object(Bucket=self.settings.bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
                self.truth_written += len(lines)
            except Exception as exc:
                log.warning("ground truth: %d labels not written yet (%s); retrying", len(lines), exc)
                failed += [r for r in records
                           if datetime.fromtimestamp(r[0], UTC).strftime("%Y/%m/%d/%H") == hour]
        if failed:
            with self._lock:
                self._truth = failed + self._truth

    def status(self) -> str:
        gaps = ", ".join(f"{name} {count:,}" for name, count in self.gaps.items() if count)
        return f"scored {self.scored:,}, unscored {sum(self.gaps.values()):,}" + (f" ({gaps})" if gaps else "")

    def close(self) -> None:
        """Stop waiting for answers (running calls end at their timeout) and write the last ground truth."""
        self._stop.set()
        self._writer.join(timeout=self.settings.groundtruth_every_s + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.write_ground_truth()
