"""The IG source against a local TLCP server and fake IG login, through the real lightstreamer-client-lib."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from conftest import LIVETRAIN
from streamer_helpers import STOP_WITHIN_S, StreamProcess, database_uri
from tlcp_server import TlcpServer, encode_value

from infra.local.services import wait_until
from livetrain.errors import UserError
from streamer.ig import IgCredentials, IgSource, MarketUpdates, Secret, load_credentials
from streamer.run import Sequencer, StopSignals

EPIC = "CS.D.BITCOIN.CFD.IP"
ITEM = f"MARKET:{EPIC}"
PASSWORD, API_KEY = "Pa55-word-Q7xZ", "api-key-7f3e9c1d2b"
SECRET = json.dumps({"ig_identifier": "trader-1", "ig_password": PASSWORD, "ig_api_key": API_KEY})
QUOTE = {"BID": "60000.5", "OFFER": "60036.5", "MID_OPEN": "59000", "HIGH": "60100", "LOW": "58900",
         "CHANGE": "1018.5", "CHANGE_PCT": "1.73", "MARKET_STATE": "TRADEABLE", "UPDATE_TIME": "10:00:00"}


@pytest.fixture
def ig_server():
    server = TlcpServer(identifier="trader-1", password=PASSWORD, api_key=API_KEY).start()
    yield server
    server.stop()


class Consumer:
    """Runs a source's events() on a thread (as the streamer's main loop does), collecting its ticks."""

    def __init__(self, source: IgSource):
        self.source, self.ticks, self.epics, self.error = source, [], [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for event in self.source.events():
                if event is not None:
                    self.epics.append(event[0])
                    self.ticks.append(event[1])
                if self._stop.is_set():
                    return
        except Exception as exc:
            self.error = exc

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.source.close()


@pytest.fixture
def streaming(ig_server):
    """A started IG source subscribed on the test server, consumed on a thread."""
    source = IgSource([EPIC], IgCredentials("trader-1", Secret(PASSWORD), Secret(API_KEY)), ig_server.url)
    source.start()
    consumer = Consumer(source)
    wait_until(lambda: ig_server.connected_sessions == 1, timeout=20, what="the subscription")
    yield consumer
    consumer.stop()


def wait_for_resubscription(consumer, ticks_before: int, condition, what) -> None:
    """Wait for `condition` on the server, then for the snapshot the new subscription delivers (the item's state).

    `ticks_before` is the consumer's tick count before the session was broken. Without the second wait, a test's
    next publish could take the snapshot for its own tick."""
    wait_until(condition, timeout=20, what=what)
    wait_until(lambda: len(consumer.ticks) > ticks_before, timeout=20, what="the snapshot of the new subscription")


def publish_and_wait(server, consumer, fields) -> object:
    count = len(consumer.ticks)
    server.publish(ITEM, fields)
    wait_until(lambda: len(consumer.ticks) > count, timeout=20, what="a tick")
    return consumer.ticks[-1]


def test_normal_stream_merges_fields_and_stamps_receive_time(ig_server, streaming):
    before = time.time_ns() // 1_000_000
    first = publish_and_wait(ig_server, streaming, QUOTE)
    second = publish_and_wait(ig_server, streaming, {"BID": "60001.5", "UPDATE_TIME": "10:00:01"})
    assert first._asdict() | {"ts": 0} == {"ts": 0, "bid": 60000.5, "offer": 60036.5, "mid_open": 59000.0,
                                          "high": 60100.0, "low": 58900.0, "change": 1018.5, "change_pct": 1.73,
                                          "market_state": "TRADEABLE", "update_time": "10:00:00"}
    assert (second.bid, second.offer, second.update_time) == (60001.5, 60036.5, "10:00:01")  # unchanged kept
    assert before <= first.ts <= second.ts <= time.time_ns() // 1_000_000
    assert streaming.source.status == "CONNECTED:WS-STREAMING"


def test_several_epics_share_one_subscription_each_item_merged_on_its_own(ig_server):
    ether = "CS.D.ETHUSD.CFD.IP"
    source = IgSource([EPIC, ether], IgCredentials("trader-1", Secret(PASSWORD), Secret(API_KEY)), ig_server.url)
    source.start()
    consumer = Consumer(source)
    try:
        wait_until(lambda: ig_server.connected_sessions == 1 and ig_server.subscriptions == 1, timeout=20,
                   what="one subscription of both items")
        ig_server.publish(ITEM, QUOTE)
        ig_server.publish(f"MARKET:{ether}", {**QUOTE, "BID": "3000.5", "OFFER": "3001.5"})
        ig_server.publish(ITEM, {"BID": "60001.5"})  # MERGE: the bitcoin item's other fields are its own
        wait_until(lambda: len(consumer.ticks) == 3, timeout=20, what="three ticks")
        assert consumer.epics == [EPIC, ether, EPIC] and ig_server.subscriptions == 1
        assert [(t.bid, t.offer) for t in consumer.ticks] == [(60000.5, 60036.5), (3000.5, 3001.5), (60001.5, 60036.5)]
    finally:
        consumer.stop()


def test_zero_bid_null_and_empty_fields_do_not_stop_parsing(ig_server, streaming):
    publish_and_wait(ig_server, streaming, QUOTE)
    zero = publish_and_wait(ig_server, streaming, {"BID": "0", "HIGH": "60200", "LOW": "58800"})
    assert (zero.bid, zero.high, zero.low) == (0.0, 60200.0, 58800.0)  # fields after the zero still parsed
    nulls = publish_and_wait(ig_server, streaming, {"BID": "60002", "CHANGE": None, "UPDATE_TIME": "",
                                                    "MARKET_STATE": "EDIT|1,2"})
    assert (nulls.bid, nulls.change, nulls.update_time, nulls.market_state) == (60002.0, 1018.5, "", "EDIT|1,2")
    sequencer = Sequencer(live=True, last_ts=None)
    assert [sequencer(t) is not None for t in streaming.ticks] == [True, False, True]  # the zero bid is dropped


def test_tcp_drop_is_noticed_and_the_stream_recovers(ig_server, streaming, caplog):
    caplog.set_level(logging.INFO, logger="livetrain")
    publish_and_wait(ig_server, streaming, QUOTE)
    ticks_before = len(streaming.ticks)
    ig_server.drop_connections()
    wait_for_resubscription(streaming, ticks_before, lambda: ig_server.sessions_created == 2
                            and ig_server.connected_sessions == 1, what="a new session after the drop")
    tick = publish_and_wait(ig_server, streaming, {"BID": "60010"})
    assert tick.bid == 60010.0
    assert ig_server.logins == 1
    wait_until(lambda: "reconnected" in caplog.text, timeout=20, what="the reconnection log line")
    assert "IG stream disconnected" in caplog.text
    assert "no updates for" in caplog.text


def test_end_48_the_client_retries_by_itself(ig_server, streaming):
    publish_and_wait(ig_server, streaming, QUOTE)
    ticks_before = len(streaming.ticks)
    ig_server.end_sessions(48, "Max session duration reached")
    wait_for_resubscription(streaming, ticks_before, lambda: ig_server.sessions_created == 2
                            and ig_server.connected_sessions == 1, what="a new session after END 48")
    assert publish_and_wait(ig_server, streaming, {"BID": "60011"}).bid == 60011.0
    assert ig_server.logins == 1


@pytest.mark.parametrize("how", ["END 31", "expired tokens (CONERR 1)"])
def test_session_ended_for_good_logs_in_again(ig_server, streaming, caplog, how):
    caplog.set_level(logging.INFO, logger="livetrain")
    publish_and_wait(ig_server, streaming, QUOTE)
    ticks_before = len(streaming.ticks)
    if how == "END 31":
        ig_server.end_sessions(31, "Session destroyed")
    else:
        ig_server.expire_tokens()
        ig_server.drop_connections()
    wait_for_resubscription(streaming, ticks_before, lambda: ig_server.logins == 2
                            and ig_server.connected_sessions == 1, what="a new login")
    assert publish_and_wait(ig_server, streaming, {"BID": "60012"}).bid == 60012.0
    assert "logging in again" in caplog.text
    assert streaming.error is None


def test_sessions_refused_despite_fresh_logins_stop_the_source_with_a_clear_error(ig_server):
    ig_server.refuse_sessions = True
    source = IgSource([EPIC], IgCredentials("trader-1", Secret(PASSWORD), Secret(API_KEY)), ig_server.url)
    source.start()
    consumer = Consumer(source)
    try:
        wait_until(lambda: consumer.error is not None, timeout=30, what="the source to give up")
    finally:
        consumer.stop()
    assert isinstance(consumer.error, UserError)
    assert "refused fresh session tokens 3 times" in str(consumer.error)
    assert ig_server.logins == 3


def test_bad_credentials_one_clear_line_and_exit_2(ig_server, run_cli, mongo_uri, mongo_db, aws):
    aws.client("s3").create_bucket(Bucket="livetrain-data")
    result = run_cli("stream", "--source", "ig", "--ig-api-url", ig_server.url, "--mongo-uri",
                     database_uri(mongo_uri, mongo_db.name), "--s3-endpoint-url", aws.endpoint_url,
                     env={"IG_IDENTIFIER": "trader-1", "IG_PASSWORD": "wrong-password", "IG_API_KEY": API_KEY},
                     timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["livetrain: error: IG login refused (HTTP 401 error.security.invalid-details); check the IG "
                      "credentials: set IG_IDENTIFIER, IG_PASSWORD, IG_API_KEY or pass --ig-secret-id (a secret "
                      "with keys ig_identifier, ig_password, ig_api_key)"]
    assert "Traceback" not in result.stderr
    assert "wrong-password" not in result.stderr + result.stdout
    assert API_KEY not in result.stderr + result.stdout


def test_missing_credentials_are_named():
    with pytest.raises(Exception, match="IG_PASSWORD, IG_API_KEY not set"):
        load_credentials(None, "us-east-1", environ={"IG_IDENTIFIER": "someone"})


def test_credentials_from_secrets_manager_never_show_in_repr(aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    aws.client("secretsmanager").create_secret(
        Name="ig", SecretString=SECRET)
    credentials = load_credentials("ig", "us-east-1")
    assert (credentials.identifier, credentials.password.reveal(), credentials.api_key.reveal()) == \
        ("trader-1", PASSWORD, API_KEY)
    assert PASSWORD not in repr(credentials) and API_KEY not in f"{credentials} {credentials.password}"
    aws.client("secretsmanager").create_secret(Name="partial", SecretString='{"ig_identifier": "x"}')
    with pytest.raises(Exception, match="secret partial: missing ig_password, ig_api_key") as error:
        load_credentials("partial", "us-east-1")
    assert "x" not in str(error.value).split(":")[0]


def test_market_updates_wait_for_every_numeric_field():
    updates = MarketUpdates()
    assert updates.tick({"BID": "1", "OFFER": "2"}, 1) is None
    tick = updates.tick({**QUOTE, "CHANGE": "not a number"}, 2)
    assert tick is None  # CHANGE never had a value yet
    assert updates.tick({"CHANGE": "-3.5"}, 3).change == -3.5


def test_tlcp_value_encoding():
    assert [encode_value(v) for v in (None, "", "a|b,c", "#x", "$", "50%")] == \
        ["#", "$", "a%7Cb%2Cc", "%23x", "%24", "50%25"]


def test_secrets_appear_in_no_log_line_exported_file_or_document(ig_server, mongo_uri, mongo_db, aws, tmp_path):
    """A real IG run (login from Secrets Manager, a re-login, a batch exported), then a search for the secrets."""
    aws.client("s3").create_bucket(Bucket="livetrain-data")
    aws.client("secretsmanager").create_secret(Name="ig/demo", SecretString=SECRET)
    log = tmp_path / "stream.log"
    process = subprocess.Popen(
        [str(LIVETRAIN), "stream", "--source", "ig", "--ig-secret-id", "ig/demo", "--ig-api-url", ig_server.url,
         "--mongo-uri", database_uri(mongo_uri, mongo_db.name), "--s3-endpoint-url", aws.endpoint_url,
         "--batch-size", "20", "--max-batches", "1", "--warmup-seconds", "0", "--stop-distance", "1",
         "--limit-distance", "1", "--max-lifetime", "0.05", "--open-every", "0"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "AWS_ENDPOINT_URL": aws.endpoint_url})
    try:
        wait_until(lambda: ig_server.connected_sessions == 1, timeout=60, what="the streamer's subscription")
        ig_server.end_sessions(31, "Session destroyed")  # a re-login: a second pair of tokens
        wait_until(lambda: ig_server.logins == 2 and ig_server.connected_sessions == 1, timeout=20, what="the re-login")
        bid, give_up_at = 60000.0, time.monotonic() + 60
        while process.poll() is None:
            bid += 2.0 if int(bid) % 4 else -2.0
            ig_server.publish(ITEM, {**QUOTE, "BID": str(bid), "OFFER": str(bid + 36)})
            time.sleep(0.005)
            assert time.monotonic() < give_up_at, "the streamer did not export a batch in time"
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert process.returncode == 0, output
    assert "logging in again" in output and "committed" in output
    s3 = aws.client("s3")
    objects = [s3.get_object(Bucket="livetrain-data", Key=o["Key"])["Body"].read().decode()
               for o in s3.list_objects_v2(Bucket="livetrain-data")["Contents"]]
    assert len(objects) == 5  # one batch: its price shard, trades, batch.json and two manifests
    documents = [json.dumps(doc, default=str) for name in mongo_db.list_collection_names()
                 for doc in mongo_db[name].find()]
    secrets = [PASSWORD, API_KEY, *ig_server.issued_tokens]
    assert len(secrets) == 6
    for text in [output, *objects, *documents]:
        assert not [secret for secret in secrets if secret in text]


@pytest.mark.parametrize("state", ["login retry backoff", "login request hanging", "streaming"])
def test_sigterm_stops_within_seconds_in_every_state(state, ig_server, mongo_uri, mongo_db, aws, tmp_path):
    """SIGTERM while IG cannot be reached (between retries), while a login request hangs, and while streaming.
    Before the fix the login retries ignored SIGTERM for minutes."""
    aws.client("s3").create_bucket(Bucket="livetrain-data")
    hanging = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    api_url = {"login retry backoff": "http://127.0.0.1:1",
               "login request hanging": f"http://127.0.0.1:{hanging.getsockname()[1]}"}.get(state, ig_server.url)
    stream = StreamProcess(["stream", "--source", "ig", "--ig-api-url", api_url, "--mongo-uri",
                            database_uri(mongo_uri, mongo_db.name), "--s3-endpoint-url", aws.endpoint_url], tmp_path,
                           env={"IG_IDENTIFIER": "trader-1", "IG_PASSWORD": PASSWORD, "IG_API_KEY": API_KEY})
    try:
        if state == "login request hanging":
            hanging.settimeout(60)
            request, _ = hanging.accept()
            request.recv(1)  # the login request is on its way: the streamer waits for the answer
        elif state == "streaming":
            wait_until(lambda: ig_server.connected_sessions == 1, timeout=60, what="the streamer's subscription")
        else:
            wait_until(lambda: "retrying in" in stream.output, timeout=60, what="a failed login")
        code, took = stream.terminate(timeout=30)
    finally:
        hanging.close()
    assert "Traceback" not in stream.output, stream.output
    assert took < STOP_WITHIN_S, f"stopped {took:.1f} s after SIGTERM\n{stream.output}"
    assert code == 0, stream.output
    assert "SIGTERM received: stopping" in stream.output


def test_a_second_sigterm_interrupts_at_once():
    """The first SIGTERM asks for a stop after the write in progress; a second one does not wait for it."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = StopSignals()
        stop.at_once = False  # streaming: the first signal only asks
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        assert stop.requested.is_set() and not stop.forced
        with pytest.raises(KeyboardInterrupt):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        assert stop.forced
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
