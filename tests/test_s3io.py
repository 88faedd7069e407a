"""The local engine's S3 transfers (pipelines/local/s3io.py) against moto's server: an object the execution has
moved already is copied from its local file while S3 still holds the same object, and downloaded otherwise."""

from __future__ import annotations

import os

import pytest

from pipelines.local import s3io


@pytest.fixture
def s3(aws):
    client = aws.client("s3")
    client.create_bucket(Bucket="transfers")
    client.gets = []  # the GetObject requests sent, by key
    client.meta.events.register("before-parameter-build.s3.GetObject",
                                lambda params, **_: client.gets.append(params["Key"]))
    return client


def slices(directory, sizes=(3000, 500)) -> dict[str, str]:
    contents = {f"train/part-{i}.csv": f"{i},0.5\n" * size for i, size in enumerate(sizes)}
    for relative, text in contents.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(text)
    return contents


def read(paths, root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in paths}


def test_what_the_execution_uploaded_is_copied_not_downloaded_while_s3_holds_it_unchanged(s3, tmp_path):
    copies = s3io.LocalCopies()
    contents = slices(tmp_path / "out")
    s3io.upload_directory(s3, tmp_path / "out", "s3://transfers/run", copies)

    first = s3io.download_input(s3, "s3://transfers/run", None, tmp_path / "a", copies=copies)
    assert read(first, tmp_path / "a") == contents and s3.gets == []
    # Someone else replaces one object: that one is downloaded, the other still copied.
    s3.put_object(Bucket="transfers", Key="run/train/part-1.csv", Body=b"9,9\n")
    second = s3io.download_input(s3, "s3://transfers/run", None, tmp_path / "b", copies=copies)
    assert read(second, tmp_path / "b") == {**contents, "train/part-1.csv": "9,9\n"}
    assert s3.gets == ["run/train/part-1.csv"]
    # What was downloaded is known too: the next reader gets a copy.
    s3io.download_input(s3, "s3://transfers/run", None, tmp_path / "c", copies=copies)
    assert s3.gets == ["run/train/part-1.csv"]


def test_a_local_file_changed_or_removed_since_is_not_used(s3, tmp_path):
    copies = s3io.LocalCopies()
    contents = slices(tmp_path / "out")
    s3io.upload_directory(s3, tmp_path / "out", "s3://transfers/run", copies)
    (tmp_path / "out" / "train" / "part-0.csv").write_text("changed\n")
    (tmp_path / "out" / "train" / "part-1.csv").unlink()

    paths = s3io.download_input(s3, "s3://transfers/run", None, tmp_path / "in", copies=copies)
    assert read(paths, tmp_path / "in") == contents
    assert sorted(s3.gets) == ["run/train/part-0.csv", "run/train/part-1.csv"]


def test_a_file_rewritten_to_the_same_size_is_not_used(s3, tmp_path):
    copies = s3io.LocalCopies()
    contents = slices(tmp_path / "out", sizes=(10,))
    source = tmp_path / "out" / "train" / "part-0.csv"
    s3io.upload_directory(s3, tmp_path / "out", "s3://transfers/run", copies)
    before = source.stat()
    source.write_text(contents["train/part-0.csv"].replace("0.5", "0.7"))
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 1))

    paths = s3io.download_input(s3, "s3://transfers/run", None, tmp_path / "in", copies=copies)
    assert read(paths, tmp_path / "in") == contents and s3.gets == ["run/train/part-0.csv"]
