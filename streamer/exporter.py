"""The crash-safe batch exporter: stored closed trades → batches in S3, `batch.manifest` written last.

A batch moves through states recorded in its MongoDB document:
- `claimed`: the document exists and names its trades (the next `batch_size` stored closed trades, a
  `close_seq` range right after the previous batch's, so no trade is in two batches or in none);
- `files_written`: the price shards, transactions.csv, batch.json and the prices manifest are in S3;
- `committed`: batch.manifest is in S3 (its arrival is the event that starts the pipeline).
The files are rendered from MongoDB with `render_batch`, which is deterministic, so a restart after a crash at
any point renders the same bytes under the same keys and finishes the batch. A put is skipped when the object
already holds the same bytes (sha256 in its metadata): the manifest lands once. S3 errors are logged and the
batch is retried with exponential backoff, while later batches keep going.

Export requests: with `requests_prefix`, the exporter looks there (at most every REQUEST_POLL_S) for objects
`<id>.json` that the act-on-alarm Lambda puts when live quality declines, and answers the oldest unanswered one
with a batch of the trades that can be claimed now (fewer than `batch_size`, at least one): its manifest starts a
retraining run as every batch does. The batch records the request's id in MongoDB, so a request is answered once,
across restarts too. Why S3 and not a new channel: the streamer already reads and writes this bucket, the Lambda
already may, and the request survives a streamer that is down when the alarm fires.

Test hook: with LIVETRAIN_TEST_CRASH_AT=<stage> in the environment the process kills itself (SIGKILL, as
`kill -9`) when the first export reaches that stage: `claimed` (before any file), a file's path in the batch
such as `prices/part-00000.csv` or `transactions.csv` (after that file's put), `batch.manifest` (after the
manifest's put, before the batch is marked committed).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from livetrain.aws_errors import is_not_found
from processing.batch_contract import MANIFEST_FILE, batch_key_prefix, format_ts, render_batch, sha256
from streamer.store import COMMITTED, Store

log = logging.getLogger("livetrain.export")
CRASH_HOOK_VARIABLE = "LIVETRAIN_TEST_CRASH_AT"
POLL_S = 0.5
REQUEST_POLL_S = 5.0
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0
S3_ERRORS = (BotoCoreError, ClientError)


class Exporter(threading.Thread):
    """Claims and exports batches in the background until stopped, or until the epic has `max_batches`
    committed batches in the store (in total: batches committed by earlier runs count)."""

    def __init__(self, store: Store, s3, bucket: str, batch_size: int, bot_settings: dict,
                 max_batches: int | None = None, requests_prefix: str | None = None):
        super().__init__(name="exporter", daemon=True)
        self.store, self.s3, self.bucket = store, s3, bucket
        self.batch_size, self.bot_settings, self.max_batches = batch_size, bot_settings, max_batches
        self.requests_prefix = requests_prefix
        self._next_request_look = 0.0
        self.committed = 0  # this run
        self.committed_before = store.committed_batches()
        self.last_batch: str | None = None
        self.idle = False  # nothing claimable and nothing unfinished at the last look
        self.steps = 0
        self.failure: BaseException | None = None
        self._stop_event, self._wake = threading.Event(), threading.Event()
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._crash_at = os.environ.get(CRASH_HOOK_VARIABLE)

    @property
    def done(self) -> bool:
        return self.max_batches is not None and self.committed_before + self.committed >= self.max_batches

    def wake(self) -> None:
        """Look for work now (called after new closed trades are stored)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the write in progress; an unfinished batch is finished by the next run."""
        self._stop_event.set()
        self._wake.set()
        self.join(timeout)

    def finish(self, give_up: threading.Event) -> None:
        """Wait until every complete batch of the trades stored so far is committed (or `give_up` is set)."""
        first_fresh_step = self.steps + 2  # the step in progress may have looked before the last flush
        self.wake()
        while not (self.steps >= first_fresh_step and self.idle) and not (
                self.done or self.failure or give_up.is_set() or not self.is_alive()):
            self.wake()
            give_up.wait(0.05)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set() and not self.done:
                claimed = self._step()
                self.steps += 1
                if not claimed:
                    self._wake.wait(POLL_S)
                    self._wake.clear()
        except BaseException as exc:  # handed to the main loop, which stops the streamer with it
            self.failure = exc

    def _step(self) -> bool:
        """Claim at most one new batch, then export the unfinished batches that are due; True if it claimed."""
        claimed = None
        if self._may_claim():
            request = self._pending_request()
            claimed = self.store.claim_batch(self.batch_size, self.bot_settings, request=request)
        if claimed:
            log.info("batch %s claimed: %d closed trades opened %s..%s%s", claimed["batch_id"], claimed["trades"],
                     *format_ts([claimed["first_open_ts"], claimed["last_open_ts"]]),
                     f", answering export request {claimed['request']}" if "request" in claimed else "")
        pending = self.store.unfinished_batches()
        for batch in pending:
            if self._stop_event.is_set() or self.done:
                break
            if time.monotonic() < self._retry_at.get(batch["batch_id"], 0.0):
                continue
            try:
                self._export(batch)
            except S3_ERRORS as exc:
                self._retry_later(batch, exc)
        self.idle = not pending and claimed is None
        return claimed is not None

    def _may_claim(self) -> bool:
        if self.max_batches is None:
            return True
        return self.committed_before + self.committed + len(self.store.unfinished_batches()) < self.max_batches

    def _pending_request(self) -> str | None:
        """The oldest export request no batch answers yet; looked for at most every REQUEST_POLL_S."""
        if self.requests_prefix is None or time.monotonic() < self._next_request_look:
            return None
        self._next_request_look = time.monotonic() + REQUEST_POLL_S
        try:
            keys = [item["Key"] for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.requests_prefix) for item in page.get("Contents", [])]
        except S3_ERRORS as exc:
            log.warning("export requests unreadable (%s); looking again in %.0f s", exc, REQUEST_POLL_S)
            return None
        requests = sorted(key[len(self.requests_prefix):].removesuffix(".json") for key in keys
                          if key.endswith(".json"))
        return next((request for request in requests if self.store.batch_answering(request) is None), None)

    def _export(self, batch: dict) -> None:
        started = time.monotonic()
        batch_id = batch["batch_id"]
        prices = self.store.batch_prices(batch)
        files = render_batch(bucket=self.bucket, epic=self.store.epic, batch_id=batch_id, prices=prices,
                             trades=self.store.batch_trades(batch), bot_settings=batch["bot"])
        prefix = batch_key_prefix(self.store.epic, batch_id)
        self._crash_point("claimed")
        if batch["state"] == "claimed":
            for name, data in files.items():
                if name != MANIFEST_FILE:
                    self._put(prefix + name, data)
                    self._crash_point(name)
            self.store.set_batch(batch, state="files_written")
        self._put(prefix + MANIFEST_FILE, files[MANIFEST_FILE])
        self._crash_point(MANIFEST_FILE)
        self.store.set_batch(batch, state=COMMITTED, committed_at=datetime.now(UTC))
        self.committed += 1
        self.last_batch = batch_id
        log.info("batch %s committed to s3://%s/%s: %d trades, %d ticks (%.2f s)", batch_id, self.bucket, prefix,
                 batch["trades"], len(prices), time.monotonic() - started)

    def _put(self, key: str, data: bytes) -> None:
        """Put the object unless it already holds these bytes."""
        digest = sha256(data)
        try:
            if self.s3.head_object(Bucket=self.bucket, Key=key)["Metadata"].get("sha256") == digest:
                return
        except ClientError as exc:
            if not is_not_found(exc):
                raise
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata={"sha256": digest})

    def _retry_later(self, batch: dict, exc: Exception) -> None:
        batch_id = batch["batch_id"]
        attempts = self._attempts[batch_id] = self._attempts.get(batch_id, 0) + 1
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempts - 1))
        self._retry_at[batch_id] = time.monotonic() + delay
        error = " ".join(str(exc).split())
        log.warning("batch %s: S3 error, attempt %d failed (%s); retrying in %.0f s", batch_id, attempts, error, delay)
        self.store.set_batch(batch, failed_attempts=attempts, last_error=error)

    def _crash_point(self, stage: str) -> None:
        if self._crash_at == stage:
            os.kill(os.getpid(), signal.SIGKILL)
