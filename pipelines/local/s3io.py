"""S3 transfers as SageMaker jobs do them: S3Prefix and ManifestFile inputs, directory outputs, JSON files.

Failures a user can fix (a missing object, a malformed manifest) raise `StepFailure` with one line. An object an
execution has moved already (`LocalCopies`) is copied from its local file when a later job reads it unchanged.
"""

from __future__ import annotations

import json
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

from pipelines.local.errors import StepFailure

COPY_BYTES = 8 << 20


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key)."""
    bucket, _, key = uri[5:].partition("/") if isinstance(uri, str) and uri.startswith("s3://") else ("", "", "")
    if not bucket:
        raise StepFailure(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


class LocalCopies:
    """The objects an execution has uploaded or downloaded, by URI, with their ETag and the local file that holds
    them: a later job reading the same object (the same ETag in the listing) gets a copy of that file instead of
    a download (Preprocess's slices are read by the baseline, the tuning job and the transforms). A file changed
    or removed since (a retried step's folder is emptied) is not used."""

    def __init__(self):
        self._files: dict[str, tuple[str, Path, int, int]] = {}
        self._lock = threading.Lock()

    def remember(self, uri: str, etag: str, path: Path) -> None:
        stat = path.stat()
        with self._lock:
            self._files[uri] = (etag, path, stat.st_size, stat.st_mtime_ns)

    def copy(self, uri: str, etag: str | None, path: Path) -> bool:
        """Copy the object's local file to `path` if there is one, unchanged; False otherwise."""
        with self._lock:
            known, source, size, modified = self._files.get(uri, (None, None, 0, 0))
        if etag is None or known != etag:
            return False
        try:
            stat = source.stat()
            if (stat.st_size, stat.st_mtime_ns) != (size, modified):
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
        except FileNotFoundError:
            return False
        return True


def _objects_under(s3, bucket: str, prefix: str) -> list[tuple[str, str]]:
    """(key, ETag) of every object under the prefix, in listing order."""
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects += [(item["Key"], item.get("ETag")) for item in page.get("Contents", [])
                    if not item["Key"].endswith("/")]
    return objects


def prefix_objects(s3, uri: str) -> list[tuple[str, str, str | None]]:
    """(URI, path relative to the prefix, ETag) of every object under an S3Prefix (an exact key: its file name)."""
    bucket, prefix = split_s3_uri(uri)
    objects = _objects_under(s3, bucket, prefix)
    if not objects:
        raise StepFailure(f"no S3 objects found under {uri}")
    return [(f"s3://{bucket}/{key}", key[len(prefix):].lstrip("/") or key.rsplit("/", 1)[-1], etag)
            for key, etag in objects]


def download_prefix(s3, uri: str, destination: Path) -> list[Path]:
    """Every object under an S3Prefix, at its path relative to the prefix."""
    return [download_file(s3, source, local_path(destination, relative))
            for source, relative, _ in prefix_objects(s3, uri)]


def read_manifest(s3, uri: str) -> tuple[str, list[str]]:
    """A ManifestFile `[{"prefix": "s3://…/"}, "relative/key", …]` → (prefix, relative keys)."""
    try:
        body = read_bytes(s3, uri)
        entries = json.loads(body)
        prefix = entries[0]["prefix"]
        relatives = entries[1:]
    except (ValueError, TypeError, KeyError, IndexError):
        raise StepFailure(f"{uri} is not a ManifestFile ([{{\"prefix\": \"s3://…/\"}}, \"key\", …])") from None
    if not relatives or not all(isinstance(r, str) and r for r in relatives):
        raise StepFailure(f"{uri} lists no files after its prefix")
    split_s3_uri(prefix)
    return prefix, relatives


def download_input(s3, uri: str, data_type: str | None, destination: Path, instance: int = 0,
                   instances: int = 1, copies: LocalCopies | None = None) -> list[Path]:
    """A job input of S3DataType `ManifestFile` or `S3Prefix` (the default) into `destination`: all its objects,
    or, for `ShardedByS3Key` over several instances, this instance's share (every `instances`-th object from its
    own number, in listing order: about 1/n of the objects each, as SageMaker promises). An object in `copies`
    with the listing's ETag is copied from its local file."""
    if data_type == "ManifestFile":
        prefix, relatives = read_manifest(s3, uri)
        objects = [(prefix + relative, relative, None) for relative in relatives]
    else:
        objects = prefix_objects(s3, uri)
    paths = []
    for source, relative, etag in objects[instance::instances]:
        path = local_path(destination, relative)
        if copies is None or not copies.copy(source, etag, path):
            download_file(s3, source, path, copies)
        paths.append(path)
    return paths


def local_path(destination: Path, relative: str) -> Path:
    """`destination/relative`, refusing a key that would land outside `destination`."""
    path = (destination / relative).resolve()
    if not path.is_relative_to(destination.resolve()):
        raise StepFailure(f"S3 key {relative!r} would be written outside the job's directory")
    return path


def download_file(s3, uri: str, path: Path, copies: LocalCopies | None = None) -> Path:
    """One object to `path` (parents created), streamed; StepFailure naming the URI if it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _object_response(s3, uri) as response, open(path, "wb") as out:
        shutil.copyfileobj(response["Body"], out, COPY_BYTES)
    if copies is not None:
        copies.remember(uri, response["ETag"], path)
    return path


def read_bytes(s3, uri: str) -> bytes:
    with _object_response(s3, uri) as response:
        return response["Body"].read()


@contextmanager
def _object_response(s3, uri: str):
    """GetObject's response, its body closed afterwards; StepFailure naming the URI if it does not exist."""
    bucket, key = split_s3_uri(uri)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        raise StepFailure(f"{uri} does not exist") from None
    except s3.exceptions.NoSuchBucket:
        raise StepFailure(f"{uri}: bucket {bucket} does not exist") from None
    try:
        yield response
    finally:
        response["Body"].close()


def read_json(s3, uri: str):
    try:
        return json.loads(read_bytes(s3, uri))
    except ValueError:
        raise StepFailure(f"{uri} is not JSON") from None


def upload_file(s3, path: Path, uri: str, copies: LocalCopies | None = None) -> None:
    bucket, key = split_s3_uri(uri)
    with open(path, "rb") as body:  # one PUT, streamed from the file (the local stack's journal replays PUTs)
        etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]
    if copies is not None:
        copies.remember(uri, etag, path)


def upload_directory(s3, directory: Path, uri: str, copies: LocalCopies | None = None) -> list[str]:
    """Every file under `directory` to `uri/<relative path>`; the URIs written."""
    written = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        target = f"{uri.rstrip('/')}/{path.relative_to(directory).as_posix()}"
        upload_file(s3, path, target, copies)
        written.append(target)
    return written
