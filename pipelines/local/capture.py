"""The local endpoint's data capture, in the layout SageMaker writes, so that the same code reads both.

An endpoint config's `DataCaptureConfig` (as the deploy Lambda sets it) turns capture on. Each captured
invocation is one JSON line:

    {"captureData": {"endpointInput":  {"observedContentType", "mode": "INPUT",  "data", "encoding"},
                     "endpointOutput": {"observedContentType", "mode": "OUTPUT", "data", "encoding"}},
     "eventMetadata": {"eventId": <uuid>, "inferenceId": <the request's InferenceId, if any>,
                       "inferenceTime": "2026-01-05T10:00:00Z"},
     "eventVersion": "0"}

with `encoding` CSV or JSON for the content types the config lists (the data as text) and BASE64 otherwise.
Lines are buffered and written every `flush_every_s` seconds, one object per hour, at
`<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/<mm>-<ss>-<ms>-<uuid>.jsonl` (UTC, the inference time).
Only the modes in CaptureOptions are written, and InitialSamplingPercentage of the invocations.
"""

from __future__ import annotations

import base64
import json
import random
import sys
import threading
import time
import uuid
from datetime import UTC, datetime


def _payload(data: bytes, content_type: str | None, mode: str, headers: dict) -> dict:
    content_type = (content_type or "").split(";")[0].strip()
    if content_type in headers.get("CsvContentTypes", ["text/csv"]):
        encoding, text = "CSV", data.decode("utf-8", "replace")
    elif content_type in headers.get("JsonContentTypes", ["application/json"]):
        encoding, text = "JSON", data.decode("utf-8", "replace")
    else:
        encoding, text = "BASE64", base64.b64encode(data).decode()
    return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}


def capture_record(config: dict, request: tuple[bytes, str | None], response: tuple[bytes, str],
                   inference_id: str | None, when: float) -> dict:
    """One capture line (see the module's docstring) for a request and its response."""
    modes = {option["CaptureMode"] for option in config.get("CaptureOptions", [])}
    headers = config.get("CaptureContentTypeHeader") or {}
    data = {}
    if "Input" in modes:
        data["endpointInput"] = _payload(*request, "INPUT", headers)
    if "Output" in modes:
        data["endpointOutput"] = _payload(*response, "OUTPUT", headers)
    metadata = {"eventId": str(uuid.uuid4()), "inferenceTime": datetime.fromtimestamp(when, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")}
    if inference_id:
        metadata["inferenceId"] = inference_id
    return {"captureData": data, "eventMetadata": metadata, "eventVersion": "0"}


class CaptureWriter:
    """Buffers capture lines and writes them to S3 from a background thread (and at stop)."""

    def __init__(self, s3, flush_every_s: float = 5.0, clock=time.time):
        self.s3, self.flush_every_s, self.clock = s3, flush_every_s, clock
        self._lines: dict[str, list[str]] = {}  # s3 key prefix (to the hour) → lines
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, config: dict | None, endpoint: str, variant: str, request: tuple[bytes, str | None],
            response: tuple[bytes, str], inference_id: str | None) -> None:
        if not config or not config.get("EnableCapture", True):
            return
        if random.uniform(0, 100) >= config.get("InitialSamplingPercentage", 100):
            return
        when = self.clock()
        record = capture_record(config, request, response, inference_id, when)
        hour = datetime.fromtimestamp(when, UTC).strftime("%Y/%m/%d/%H")
        prefix = f"{config['DestinationS3Uri'].rstrip('/')}/{endpoint}/{variant}/{hour}/"
        with self._lock:
            self._lines.setdefault(prefix, []).append(json.dumps(record))

    def flush(self) -> None:
        """Write what is buffered; lines that could not be written stay buffered for the next flush."""
        with self._lock:
            buffered, self._lines = self._lines, {}
        for prefix, lines in buffered.items():
            bucket, _, key_prefix = prefix.removeprefix("s3://").partition("/")
            now = datetime.fromtimestamp(self.clock(), UTC)
            key = f"{key_prefix}{now:%M-%S}-{now.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
            try:
                self.s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
            except Exception as exc:  # capture must never break inference: keep the lines and say so
                print(f"endpoint: data capture to {prefix} failed ({exc}); retrying", file=sys.stderr)
                with self._lock:
                    self._lines[prefix] = lines + self._lines.get(prefix, [])

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.flush_every_s):
                self.flush()

        self._thread = threading.Thread(target=loop, name="data-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
