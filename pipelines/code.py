"""The processing code a pipeline ships, at content addresses: `s3://<bucket>/<prefix>/code/<sha256>/`.

The definition names these prefixes (`pipelines/definition.py`) and `upsert` uploads exactly these files
(`pipelines/driver.py`). Standard library only: no SageMaker SDK is needed to know what to upload.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import processing
from livetrain.errors import UserError

PROCESSING_DIR = Path(processing.__file__).resolve().parent


@dataclass(frozen=True)
class CodeBundle:
    """A processing script and what it imports that the image lacks, at a content-addressed S3 prefix."""

    script: str
    files: dict[str, bytes]  # key below s3_prefix → content
    s3_prefix: str  # s3://<bucket>/<prefix>/code/<sha256>/

    def uploads(self) -> list[tuple[str, str, bytes]]:
        """(bucket, key, content) for each file to upload."""
        bucket, _, key_prefix = self.s3_prefix.removeprefix("s3://").partition("/")
        return [(bucket, key_prefix + name, content) for name, content in self.files.items()]


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


# evaluate.py's block bootstrap is arch's (NCSA licence), which the scikit-learn image lacks. The bundle ships
# arch.bootstrap and the parts of arch it imports, from the installed (pinned) distribution, with an empty
# package __init__: arch's own would import its volatility models and, through them, statsmodels.
ARCH_PARTS = ("_typing.py", "_version.py", "bootstrap", "compat", "utility", "vendor")
ARCH_INIT = (b'"""arch, as livetrain ships it into SageMaker Processing: arch.bootstrap and what it imports '
             b'(pipelines/code.py)."""\n')


def arch_bootstrap_files() -> dict[str, bytes]:
    """arch.bootstrap's source files and arch's licence, keyed as they sit below the bundle's prefix."""
    spec = importlib.util.find_spec("arch")  # found, not imported: importing arch takes seconds
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the arch package is not installed: the evaluation step ships its bootstrap; "
                        "install livetrain with the [pipelines] extra")
    root = Path(spec.submodule_search_locations[0])
    files = {"arch/__init__.py": ARCH_INIT}
    for part in ARCH_PARTS:
        for path in [root / part] if part.endswith(".py") else sorted((root / part).rglob("*.py")):
            if "tests" not in path.relative_to(root).parts:
                files[f"arch/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    licence = next(f for f in importlib.metadata.distribution("arch").files if f.name.startswith("LICENSE"))
    files["arch/LICENSE.md"] = licence.locate().read_bytes()
    return files


def code_bundle(script: Path, bucket: str, prefix: str, extra: dict[str, bytes] | None = None) -> CodeBundle:
    """The bundle for one script; its address is the sha256 over the shipped files' names and contents."""
    if not script.is_file():
        raise UserError(f"{script} is missing: the pipeline ships it to SageMaker Processing; restore it")
    files = {path.name: path.read_bytes() for path in shipped_files(script)} | (extra or {})
    files = dict(sorted(files.items()))
    digest = hashlib.sha256()
    for name, content in files.items():
        digest.update(f"{name}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    return CodeBundle(script.name, files, f"s3://{bucket}/{prefix}/code/{digest.hexdigest()}/")


def code_bundles(bucket: str, prefix: str, code_dir: Path = PROCESSING_DIR) -> dict[str, CodeBundle]:
    """The code each processing step ships, by step name."""
    return {"Preprocess": code_bundle(code_dir / "preprocess.py", bucket, prefix),
            "FitBaseline": code_bundle(code_dir / "baseline.py", bucket, prefix),
            "EvaluateBestModel": code_bundle(code_dir / "evaluate.py", bucket, prefix, arch_bootstrap_files()),
            "MeasureLiveQuality": code_bundle(code_dir / "monitor.py", bucket, prefix, arch_bootstrap_files())}
