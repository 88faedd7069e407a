"""Putting a batch directory into S3 as the streamer does: its files under the batch's prefix, the manifest last."""

import json
from pathlib import Path

from processing.batch_contract import BATCH_JSON_FILE, MANIFEST_FILE, PRICES_FILE, TRANSACTIONS_FILE, batch_key_prefix


def upload_batch(s3, bucket: str, batch_dir: Path) -> str:
    """Upload the batch; returns its manifest's key (whose arrival is the event)."""
    meta = json.loads((batch_dir / BATCH_JSON_FILE).read_text())
    prefix = batch_key_prefix(meta["epic"], meta["batch_id"])
    for name in (PRICES_FILE, TRANSACTIONS_FILE, BATCH_JSON_FILE, MANIFEST_FILE):
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=(batch_dir / name).read_bytes())
    return prefix + MANIFEST_FILE
