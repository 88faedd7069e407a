"""The streamer's packaging: no SageMaker SDK in its imports or its image; the Dockerfile's content."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys

from conftest import ROOT

import streamer

DOCKERFILE = ROOT / "streamer" / "Dockerfile"


def test_no_streamer_module_imports_the_sagemaker_sdk():
    modules = sorted(f"streamer.{m.name}" for m in pkgutil.iter_modules(streamer.__path__))
    assert {"streamer.ig", "streamer.store", "streamer.exporter", "streamer.run", "streamer.bot"} <= set(modules)
    code = (f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
            "import livetrain.cli; livetrain.cli.build_parser()\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sagemaker', 'secantus', 'moto'))\n"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_is_pinned_non_root_and_installs_only_the_streamer_extra():
    steps = instructions()
    froms = [arg for op, arg in steps if op == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", froms[0])
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert re.findall(r"pip install (\S+)", runs) == ['"/src[streamer]"']
    body = " ".join(arg for _, arg in steps).lower()
    assert "sagemaker" not in body and "secantus" not in body and "moto" not in body
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [op for op, _ in steps].index("USER") > max(i for i, (op, _) in enumerate(steps) if op == "RUN")
    assert [arg for op, arg in steps if op == "ENTRYPOINT"] == ['["livetrain", "stream"]']


def test_the_streamer_extra_has_no_sagemaker_sdk_or_local_stand_ins():
    setup = (ROOT / "setup.py").read_text()
    streamer_extra = re.search(r"STREAMER = \[(.*?)\]", setup, re.S).group(1).lower()
    assert "pymongo" in streamer_extra and "lightstreamer-client-lib" in streamer_extra
    assert not [name for name in ("sagemaker", "secantus", "moto") if name in streamer_extra]
