"""The IG source: REST login (v2) and one `MARKET:<epic>` subscription of one or several items (an item per
epic) through lightstreamer-client-lib.

Credentials come from a Secrets Manager secret (JSON keys ig_identifier, ig_password, ig_api_key) or the
environment (IG_IDENTIFIER, IG_PASSWORD, IG_API_KEY). Password, API key and session tokens are held as
`Secret`s, whose repr is masked, and are never logged.

The client library runs its network I/O and listener callbacks on its own threads: the callbacks only put what
they received on a queue; `IgSource.events()` (the caller's thread) parses, logs and reconnects. The library
retries by itself after most errors; when the server refuses or ends the session for good (CONERR 1 bad or
expired tokens, END 31/32, any `onServerError`), the source logs in again and reconnects, with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

from livetrain.errors import UserError
from streamer.sources import IDLE_S, NUMERIC_FIELDS, TICK_FIELDS, Stopped, Tick

log = logging.getLogger("livetrain.ig")
MARKET_FIELDS = tuple(name.upper() for name in TICK_FIELDS if name != "ts")  # BID OFFER MID_OPEN … UPDATE_TIME
SECRET_KEYS = ("ig_identifier", "ig_password", "ig_api_key")
ENV_KEYS = ("IG_IDENTIFIER", "IG_PASSWORD", "IG_API_KEY")
CREDENTIALS_HELP = f"set {', '.join(ENV_KEYS)} or pass --ig-secret-id (a secret with keys {', '.join(SECRET_KEYS)})"
BAD_TOKENS = 1  # CONERR/END code: user/password check failed (wrong or expired session tokens)
REFUSALS_BEFORE_GIVING_UP = 3
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0
STOP_CHECK_S = 0.1  # how often a login in progress looks whether a stop was requested
# Shorter than the library's defaults, so that a dead connection is noticed in about 2.5 s (see
# shared/reference/ig-streaming.md): milliseconds.
CONNECTION_TIMEOUTS = {"setKeepaliveInterval": 1000, "setStalledTimeout": 1000, "setReconnectTimeout": 1500,
                       "setRetryDelay": 1000, "setFirstRetryMaxDelay": 100, "setSessionRecoveryTimeout": 5000}


class Secret:
    """A secret string whose repr and str are masked; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class IgCredentials:
    identifier: str
    password: Secret
    api_key: Secret


@dataclass(frozen=True)
class IgSession:
    """What a REST login returns: where to stream and the tokens to stream with."""

    account_id: str
    lightstreamer_endpoint: str
    cst: Secret = field(repr=False)
    security_token: Secret = field(repr=False)

    def streaming_password(self) -> str:
        return f"CST-{self.cst.reveal()}|XST-{self.security_token.reveal()}"


class IgUnavailable(Exception):
    """A login that may succeed later (network error, server error)."""


def load_credentials(secret_id: str | None, region: str, environ=os.environ) -> IgCredentials:
    """From the Secrets Manager secret `secret_id` (JSON) when given, else from the environment."""
    if secret_id:
        import boto3

        text = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_id)["SecretString"]
        try:
            values = json.loads(text)
        except ValueError:
            values = None
        if not isinstance(values, dict):
            raise UserError(f"secret {secret_id}: not a JSON object; it needs the keys {', '.join(SECRET_KEYS)}")
        missing = [key for key in SECRET_KEYS if not values.get(key)]
        if missing:
            raise UserError(f"secret {secret_id}: missing {', '.join(missing)}; it needs the keys "
                            f"{', '.join(SECRET_KEYS)}")
        identifier, password, api_key = (values[key] for key in SECRET_KEYS)
    else:
        missing = [key for key in ENV_KEYS if not environ.get(key)]
        if missing:
            raise UserError(f"no IG credentials: {', '.join(missing)} not set; {CREDENTIALS_HELP}")
        identifier, password, api_key = (environ[key] for key in ENV_KEYS)
    return IgCredentials(identifier=identifier, password=Secret(password), api_key=Secret(api_key))


def login(api_url: str, credentials: IgCredentials, timeout: float = 15.0) -> IgSession:
    """POST /session (version 2): tokens from the response headers, the streaming endpoint from the body.

    Raises UserError when IG refuses the credentials, IgUnavailable when it cannot be reached.
    """
    body = json.dumps({"identifier": credentials.identifier, "password": credentials.password.reveal()}).encode()
    request = urllib.request.Request(f"{api_url.rstrip('/')}/session", data=body, method="POST", headers={
        "X-IG-API-KEY": credentials.api_key.reveal(), "VERSION": "2",
        "Content-Type": "application/json; charset=UTF-8", "Accept": "application/json; charset=UTF-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers, payload = response.headers, json.load(response)
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {_error_code(exc)}".strip()
        if exc.code in (400, 401, 403):
            raise UserError(f"IG login refused ({reason}); check the IG credentials: {CREDENTIALS_HELP}") from None
        raise IgUnavailable(f"IG login failed ({reason})") from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, a body that is not JSON
        raise IgUnavailable(f"IG login failed at {api_url} ({type(exc).__name__}: "
                            f"{getattr(exc, 'reason', exc)})") from None
    cst, security_token = headers.get("CST"), headers.get("X-SECURITY-TOKEN")
    account_id, endpoint = payload.get("currentAccountId"), payload.get("lightstreamerEndpoint")
    if not (cst and security_token and account_id and endpoint):
        raise IgUnavailable("IG login answer lacks the CST/X-SECURITY-TOKEN headers or the account and "
                            "lightstreamerEndpoint; is --ig-api-url IG's REST API?")
    return IgSession(account_id=account_id, lightstreamer_endpoint=endpoint, cst=Secret(cst),
                     security_token=Secret(security_token))


def _error_code(exc: urllib.error.HTTPError) -> str:
    """IG's `errorCode` from an error body (only if it looks like one: never echo anything else)."""
    try:
        code = json.loads(exc.read() or b"{}").get("errorCode", "")
    except (ValueError, AttributeError, OSError):
        return ""
    return code if isinstance(code, str) and re.fullmatch(r"[\w.\-]{1,80}", code) else ""


class MarketUpdates:
    """IG `MARKET` updates (MERGE mode) → ticks.

    The client library hands over every field, unchanged ones with their last value. A null field (or one that
    does not parse) keeps the last value seen; each field is parsed on its own, so a zero or an empty field never
    stops the parsing of the others. No tick is made until every numeric field has had a value; ticks whose
    prices the batch contract rejects (e.g. a zero bid) are dropped later by `sources.usable`.
    """

    def __init__(self):
        self._last: dict[str, float | str] = {}

    def tick(self, values: dict[str, str | None], received_ms: int) -> Tick | None:
        for name, text in values.items():
            column = name.lower()
            value = _number(text) if column in NUMERIC_FIELDS else text
            if value is not None:
                self._last[column] = value
        if any(column not in self._last for column in NUMERIC_FIELDS):
            return None
        return Tick(ts=received_ms, **{column: self._last.get(column, "") for column in TICK_FIELDS[1:]})


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class _Listener:
    """Callbacks of the client library (its thread): put what arrived on the queue, nothing else."""

    def __init__(self, events: queue.SimpleQueue):
        self._events = events

    def onStatusChange(self, status):
        self._events.put(("status", status))

    def onServerError(self, code, message):
        self._events.put(("server_error", code, message))

    def onItemUpdate(self, update):
        values = {name: update.getValue(name) for name in MARKET_FIELDS}
        self._events.put(("update", update.getItemName(), values, time.time_ns() // 1_000_000))

    def onSubscriptionError(self, code, message):
        self._events.put(("subscription_error", code, message))

    def onItemLostUpdates(self, item_name, item_pos, lost):
        self._events.put(("lost", item_name, lost))

    def __getattr__(self, name):  # the listener interfaces' other callbacks: nothing to do
        if name.startswith("on"):
            return lambda *args: None
        raise AttributeError(name)


def _login_into(outcome: queue.SimpleQueue, api_url: str, credentials: IgCredentials) -> None:
    try:
        outcome.put(login(api_url, credentials))
    except Exception as exc:  # raised again by the thread that waits for it
        outcome.put(exc)


class IgSource:
    """IG's live prices for one or several epics, one subscription with an item per epic. Setting `stop` abandons
    a login in progress and the waits between logins."""

    live = True
    bad_rows = ""

    def __init__(self, epics: list[str], credentials: IgCredentials, api_url: str,
                 stop: threading.Event | None = None):
        self.items = {f"MARKET:{epic}": epic for epic in epics}
        self.api_url, self._credentials = api_url, credentials
        self._stop = stop or threading.Event()
        self.status = "DISCONNECTED"
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._updates = {item: MarketUpdates() for item in self.items}  # MERGE mode keeps fields per item
        self._client = self._subscription = None
        self._down_since: float | None = None
        self._last_update = time.monotonic()
        self._reconnect_at: float | None = None
        self._failures = 0  # consecutive failed logins or refused sessions
        self._refusals = 0  # consecutive CONERR 1 since the last streaming connection

    def start(self) -> None:
        """Log in (a refusal is a UserError; an unreachable API is retried), connect and subscribe.

        Raises Stopped when `stop` is set before the login succeeds.
        """
        from lightstreamer.client import LightstreamerClient, Subscription

        session = self._login()
        while session is None:
            if self._stop.wait(self._backoff()):
                raise Stopped("stopped while logging in to IG")
            session = self._login()
        self._client = LightstreamerClient(session.lightstreamer_endpoint, None)
        for option, millis in CONNECTION_TIMEOUTS.items():
            getattr(self._client.connectionOptions, option)(millis)
        listener = _Listener(self._events)
        self._client.addListener(listener)
        self._subscription = Subscription("MERGE", list(self.items), list(MARKET_FIELDS))
        self._subscription.setRequestedSnapshot("yes")
        self._subscription.addListener(listener)
        self._client.subscribe(self._subscription)
        self._connect(session)

    def events(self) -> Iterator[tuple[str, Tick] | None]:
        while True:
            if self._reconnect_at is not None and time.monotonic() >= self._reconnect_at:
                self._reconnect()
            try:
                kind, *payload = self._events.get(timeout=IDLE_S)
            except queue.Empty:
                yield None
                continue
            if kind == "update":
                self._last_update = time.monotonic()
                item, values, received_ms = payload
                tick = self._updates[item].tick(values, received_ms)
                yield None if tick is None else (self.items[item], tick)
            elif kind == "status":
                self._on_status(*payload)
            elif kind == "server_error":
                self._on_server_error(*payload)
            elif kind == "subscription_error":
                code, message = payload
                raise UserError(f"IG refused the subscription to {', '.join(self.items)} (code {code}: {message}); "
                                f"check --epic")
            elif kind == "lost":
                log.warning("IG dropped %s updates of %s (client too slow)", payload[1], payload[0])

    def close(self) -> None:
        """Stop subscribing and disconnect."""
        if self._client is not None:
            self._client.unsubscribe(self._subscription)
            self._client.disconnect()

    def _login(self) -> IgSession | None:
        """The session, or None when IG cannot be reached or `stop` was set (the request runs on a daemon thread,
        abandoned on a stop: a request that hangs must not hold up a SIGTERM)."""
        outcome: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=_login_into, args=(outcome, self.api_url, self._credentials), name="ig-login",
                         daemon=True).start()
        session = None
        while session is None and not self._stop.is_set():
            with contextlib.suppress(queue.Empty):
                session = outcome.get(timeout=STOP_CHECK_S)
        if isinstance(session, IgUnavailable):
            log.warning("%s; retrying in %.0f s", session, self._next_backoff())
            return None
        if isinstance(session, Exception):
            raise session
        if session is None:
            return None
        log.info("logged in to IG (account %s); streaming from %s", session.account_id,
                 session.lightstreamer_endpoint)
        return session

    def _connect(self, session: IgSession) -> None:
        details = self._client.connectionDetails
        details.setServerAddress(session.lightstreamer_endpoint)
        details.setUser(session.account_id)
        details.setPassword(session.streaming_password())
        self._client.connect()

    def _reconnect(self) -> None:
        session = self._login()
        if session is None:
            self._reconnect_at = time.monotonic() + self._backoff()
            return
        self._reconnect_at = None
        self._connect(session)

    def _on_status(self, status: str) -> None:
        previous, self.status = self.status, status
        streaming = status.startswith("CONNECTED:") and status != "CONNECTED:STREAM-SENSING"
        if streaming:
            self._failures = self._refusals = 0
            if self._down_since is not None:
                now = time.monotonic()
                log.warning("IG stream reconnected (%s): disconnected for %.1f s, no updates for %.1f s", status,
                            now - self._down_since, now - self._last_update)
                self._down_since = None
        elif previous.startswith("CONNECTED:") and self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("IG stream disconnected (%s)", status)

    def _on_server_error(self, code: int, message: str | None) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        if code == BAD_TOKENS:
            self._refusals += 1
            if self._refusals >= REFUSALS_BEFORE_GIVING_UP:
                raise UserError(f"IG streaming refused fresh session tokens {self._refusals} times "
                                f"(code {code}: {message}); check that the IG account may stream prices")
        delay = 0.0 if self._failures == 0 else self._next_backoff()
        self._failures += 1
        log.warning("IG streaming session closed by the server (code %s: %s); logging in again in %.0f s",
                    code, message, delay)
        self._reconnect_at = time.monotonic() + delay

    def _next_backoff(self) -> float:
        return min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** self._failures)

    def _backoff(self) -> float:
        delay = self._next_backoff()
        self._failures += 1
        return delay
