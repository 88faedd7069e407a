"""Local batch transform: a model.tar.gz applied to an input file as a SageMaker transform job would, with the
algorithm's own serving codec (the Transform step, steps/transform.py, finds the algorithm from the model's image).

With SplitType "Line" the file is cut into records by line and sent in mini-batches; each response is
appended to the output (AssembleWith "Line"), so with Accept application/jsonlines the output has one
JSON line per input record, in order. Blank lines are not records. SageMaker names the output of an
input `<key>` as `<key>.out` under the job's S3OutputPath: choosing that name is the caller's job.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipelines.local.algorithms import Algorithm, linear_learner
from pipelines.local.errors import InferenceError, TransformError

RECORDS_PER_REQUEST = 1000


def batch_transform(model_tar: Path, input_file: Path, output_file: Path, content_type: str = "text/csv",
                    accept: str = "application/jsonlines", split_type: str | None = "Line",
                    records_per_request: int = RECORDS_PER_REQUEST, algorithm: Algorithm = linear_learner) -> int:
    """Write the predictions for `input_file` to `output_file`; returns the number of records.

    split_type "Line" (records by line) or None/"None" (the whole file is one request). On failure the
    output file is not created.
    """
    model = algorithm.load_model(model_tar)
    input_file, output_file = Path(input_file), Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    partial = output_file.with_name(output_file.name + ".partial")
    records = 0
    try:
        with open(input_file, "rb") as source, open(partial, "wb") as target:
            if split_type == "Line":
                requests = _line_requests(source, records_per_request)
            elif split_type in (None, "None"):
                requests = iter([(1, source.read())])
            else:
                raise TransformError(f"SplitType {split_type!r} is not supported locally; use Line or None")
            for first_line, body in requests:
                try:
                    features = algorithm.decode_request(body, content_type, model.feature_dim)
                    response, _ = algorithm.encode_response(*model.predict(features), accept)
                except InferenceError as exc:
                    raise TransformError(f"{input_file.name}, request starting at line {first_line}: {exc}") from None
                target.write(response if response.endswith(b"\n") else response + b"\n")
                records += len(features)
        partial.replace(output_file)
    finally:
        partial.unlink(missing_ok=True)
    return records


def _line_requests(source, records_per_request: int) -> Iterator[tuple[int, bytes]]:
    """(first line number, body) of consecutive mini-batches of non-blank lines."""
    batch: list[bytes] = []
    first = 1
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        if not batch:
            first = number
        batch.append(line if line.endswith(b"\n") else line + b"\n")
        if len(batch) == records_per_request:
            yield first, b"".join(batch)
            batch = []
    if batch:
        yield first, b"".join(batch)
