"""The processing code a pipeline ships, at content addresses: `s3://<bucket>/<prefix>/code/<sha256>/`.

The definition names these prefixes (`pipelines/definition.py`) and `upsert` uploads exactly these files
(`pipelines/driver.py`). Standard library only: no SageMaker SDK is needed to know what to upload.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path

import processing
from livetrain.errors import UserError

PROCESSING_DIR = Path(processing.__file__).resolve().parent


@dataclass(frozen=True)
class CodeBundle:
    """A processing script and the sibling modules it imports, at a content-addressed S3 prefix."""

    script: str
    files: tuple[Path, ...]
    s3_prefix: str  # s3://<bucket>/<prefix>/code/<sha256>/

    def uploads(self) -> list[tuple[Path, str, str]]:
        """(local file, bucket, key) for each file to upload."""
        bucket, _, key_prefix = self.s3_prefix.removeprefix("s3://").partition("/")
        return [(path, bucket, key_prefix + path.name) for path in self.files]


def shipped_files(script: Path) -> tuple[Path, ...]:
    """`script` and, transitively, the modules next to it that it imports, sorted by name."""
    found: dict[str, Path] = {}
    pending = [script]
    while pending:
        path = pending.pop()
        if path.name in found:
            continue
        found[path.name] = path
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                sibling = path.parent / f"{name.split('.')[-1]}.py"
                if sibling.is_file() and name.split(".")[0] in (sibling.stem, path.parent.name):
                    pending.append(sibling)
    return tuple(found[name] for name in sorted(found))


def code_bundle(script: Path, bucket: str, prefix: str) -> CodeBundle:
    """The bundle for one script; its address is the sha256 over the shipped files' names and contents."""
    if not script.is_file():
        raise UserError(f"{script} is missing: the pipeline ships it to SageMaker Processing; restore it")
    files = shipped_files(script)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return CodeBundle(script.name, files, f"s3://{bucket}/{prefix}/code/{digest.hexdigest()}/")


def code_bundles(bucket: str, prefix: str, code_dir: Path = PROCESSING_DIR) -> dict[str, CodeBundle]:
    """The code each processing step ships, by step name."""
    return {"Preprocess": code_bundle(code_dir / "preprocess.py", bucket, prefix),
            "EvaluateBestModel": code_bundle(code_dir / "evaluate.py", bucket, prefix)}
