"""Shared fixtures: real protocols on loopback (moto's HTTP server, a MongoDB-wire server), the CLI, batches."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from livetrain.config import Config

ROOT = Path(__file__).resolve().parents[1]
LIVETRAIN = Path(sys.executable).parent / "livetrain"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's (`make browser`); Playwright's own download does not work here
# As root, on a machine whose network is closed: no sandbox, nothing fetched in the background.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Tests never reach a real AWS account: fake credentials, no profile, no config files.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_name, None)
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                  AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
# Built pipeline definitions are kept for this session only (its processes share them): every run starts cold,
# as CI does on a clean clone, and nothing is left in the user's cache.
_CACHE = tempfile.TemporaryDirectory(prefix="livetrain-test-cache-")
os.environ["LIVETRAIN_CACHE_DIR"] = _CACHE.name


class Aws:
    """moto in server mode; ordinary boto3 clients pointed at it."""

    def __init__(self, endpoint_url: str):
        self.endpoint_url = endpoint_url

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name="us-east-1")

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"))


@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    from infra.local.moto_gaps import apply

    apply()  # the same moto as the local stack's
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield Aws(f"http://{host}:{port}")
    server.stop()


@pytest.fixture
def aws(moto_server) -> Aws:
    """moto's server, emptied before the test."""
    moto_server.reset()
    return moto_server


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    """A MongoDB URI: $MONGODB_URI when set, else the local MongoDB-wire server for this session."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    from secantus import SecantusDBServer

    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=str(tmp_path_factory.mktemp("mongo")))
    server.start()
    yield server.uri
    server.stop()


@pytest.fixture
def mongo_db(mongo_uri, request):
    """A fresh database (named after the test) on the session's MongoDB server."""
    import pymongo

    client = pymongo.MongoClient(mongo_uri)
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-50:]
    client.drop_database(name)
    yield client[name]
    client.drop_database(name)
    client.close()


@pytest.fixture
def run_cli():
    """Run the installed `livetrain` command; returns the CompletedProcess."""

    def run(*args, env=None, timeout=600, input=None):
        return subprocess.run([str(LIVETRAIN), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, **(env or {})}, timeout=timeout, input=input)

    return run


@pytest.fixture
def browser_page(tmp_path):
    """A page of a headless Chromium with a fresh profile, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture(scope="session")
def make_batch(tmp_path_factory):
    """Factory of synthetic batch directories, made once per session; copy one before changing it."""
    made: dict[tuple, Path] = {}

    def make(trades: int = 2000, seed: int = 0, market: str = "planted-signal", epic: str = Config.epic,
             bucket: str = Config.bucket, signal_changes: tuple = (), **bot_settings) -> Path:
        key = (trades, seed, market, epic, bucket, signal_changes, *sorted(bot_settings.items()))
        if key not in made:
            from processing.batch_contract import render_batch, write_batch_dir
            from streamer.market import MarketSettings
            from streamer.synth import synthesize
            from streamer.trading import BotSettings

            bot = BotSettings(**bot_settings)
            prices, trade_rows = synthesize(trades, seed, MarketSettings(market=market, signal_changes=signal_changes),
                                            bot, epic, progress=None)
            batch_id = "-".join(map(str, ["test", market, seed, trades, len(made)]))
            files = render_batch(bucket=bucket, epic=epic, batch_id=batch_id, prices=prices, trades=trade_rows,
                                 bot_settings=bot.as_dict())
            made[key] = write_batch_dir(files, tmp_path_factory.mktemp("batches") / batch_id)
        return made[key]

    return make


@pytest.fixture
def batch_copy(make_batch, tmp_path):
    """A private, writable copy of a synthetic batch (for tests that break it)."""

    def copy(**kwargs) -> Path:
        return Path(shutil.copytree(make_batch(**kwargs), tmp_path / "batch"))

    return copy


def group_is_gone(pid: int) -> bool:
    """Whether no process of the process group `pid` is left."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False
