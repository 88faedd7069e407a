"""A TLCP 2.5.0 test server (WebSocket) and a fake IG REST login, so the real lightstreamer-client-lib runs in tests.

One aiohttp app on 127.0.0.1, served from a background thread:
- `POST /session`: IG's login, version 2. Checks `X-IG-API-KEY` and the identifier and password; answers fresh
  tokens in the `CST` and `X-SECURITY-TOKEN` headers and a body with `currentAccountId` and
  `lightstreamerEndpoint` (this server).
- `GET /lightstreamer`: TLCP over WebSocket (subprotocol TLCP-2.5.0.lightstreamer.com): `wsok`,
  `create_session` (LS_user must be the account, LS_password `CST-<cst>|XST-<xst>` of a valid login, else
  CONERR 1), `control` (add — of one item or several, space-separated in LS_group — / delete / destroy),
  `bind_session` (no session recovery here: CONERR 20, so the
  client opens a new session and subscribes again; also over HTTP, where the client tries recovery),
  `heartbeat`; PROBE at the keepalive interval.

Test controls, callable from any thread: `publish(item, fields)` (MERGE: only changed fields travel; None is
sent as null, "" as an empty string), `drop_connections()` (TCP abort, no END), `end_sessions(code, message)`,
`expire_tokens()`, `refuse_sessions`; counters `logins`, `sessions_created`, `subscriptions`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import threading
import urllib.parse

from aiohttp import WSMsgType, web

PROTOCOL = "TLCP-2.5.0.lightstreamer.com"
_ESCAPED = {"%": "%25", "|": "%7C", ",": "%2C", "\r": "%0D", "\n": "%0A"}


def encode_value(value: str | None) -> str:
    """A field value as TLCP sends it: `#` null, `$` empty string, special characters percent-encoded."""
    if value is None:
        return "#"
    if value == "":
        return "$"
    text = "".join(_ESCAPED.get(char, char) for char in value)
    return f"%{ord(text[0]):02X}{text[1:]}" if text[0] in "#$^" else text


def _params(line: str) -> dict[str, str]:
    return {urllib.parse.unquote(k): urllib.parse.unquote(v)
            for k, _, v in (pair.partition("=") for pair in line.split("&") if pair)}


class _Session:
    def __init__(self, session_id: str, ws: web.WebSocketResponse, transport):
        self.id, self.ws, self.transport = session_id, ws, transport
        self.subscriptions: dict[str, tuple[list[str], list[str]]] = {}  # subId → (items, fields)
        self.sent: dict[tuple[str, str], dict[str, str | None]] = {}  # (subId, item) → last values sent


class TlcpServer:
    """IG's REST login and Lightstreamer streaming, on loopback."""

    def __init__(self, identifier: str, password: str, api_key: str, account: str = "ABC123",
                 keepalive_ms: int = 1000):
        self.identifier, self.password, self.api_key, self.account = identifier, password, api_key, account
        self.keepalive_ms = keepalive_ms
        self.refuse_sessions = False  # when set, every create_session gets CONERR 1, fresh tokens or not
        self.logins = self.sessions_created = self.subscriptions = 0
        self.issued_tokens: list[str] = []  # every CST and X-SECURITY-TOKEN handed out
        self._valid: set[str] = set()  # valid streaming passwords
        self._state: dict[str, dict[str, str | None]] = {}  # item → current field values
        self._sessions: dict[str, _Session] = {}
        self._transports: set = set()  # of the open WebSocket connections
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tlcp-server", daemon=True)
        self.url = ""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> TlcpServer:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self):
        app = web.Application()
        app.router.add_post("/session", self._login)
        app.router.add_get("/lightstreamer", self._websocket)
        app.router.add_post("/lightstreamer/bind_session.txt", self._unknown_session)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def _shutdown(self):
        for transport in self._transports:
            transport.abort()
        await self._runner.cleanup()

    def _call(self, coroutine, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # ------------------------------------------------------------ test controls

    def publish(self, item: str, fields: dict[str, str | None]) -> None:
        """Merge `fields` into the item's state and send the changes to every subscription of the item."""
        self._call(self._publish(item, fields))

    def drop_connections(self) -> None:
        """Abort every TCP connection, without END: the client must notice by itself."""
        self._call(self._drop())

    def end_sessions(self, code: int, message: str) -> None:
        """Send END,<code> to every session and close it."""
        self._call(self._end(code, message))

    def expire_tokens(self) -> None:
        """Every token handed out so far stops being valid (new sessions get CONERR 1 until a new login)."""
        self._valid.clear()

    @property
    def connected_sessions(self) -> int:
        return sum(bool(session.subscriptions) for session in self._sessions.values())

    # ------------------------------------------------------------ IG REST

    async def _login(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IG-API-KEY") != self.api_key:
            return web.json_response({"errorCode": "error.security.api-key-invalid"}, status=403)
        if request.headers.get("VERSION") != "2":
            return web.json_response({"errorCode": "error.request.invalid.version"}, status=400)
        body = await request.json()
        if (body.get("identifier"), body.get("password")) != (self.identifier, self.password):
            return web.json_response({"errorCode": "error.security.invalid-details"}, status=401)
        self.logins += 1
        cst, xst = secrets.token_hex(12), secrets.token_hex(12)
        self.issued_tokens += [cst, xst]
        self._valid.add(f"CST-{cst}|XST-{xst}")
        return web.json_response({"accountType": "CFD", "currentAccountId": self.account,
                                  "lightstreamerEndpoint": self.url, "timezoneOffset": 0},
                                 headers={"CST": cst, "X-SECURITY-TOKEN": xst})

    # ------------------------------------------------------------ TLCP

    async def _unknown_session(self, request: web.Request) -> web.Response:
        return web.Response(text="CONERR,20,Unknown%20session\r\n")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(PROTOCOL,), autoping=True)
        await ws.prepare(request)
        self._transports.add(request.transport)
        session: _Session | None = None
        probes = None
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                name, *lines = message.data.split("\r\n")
                if name == "wsok":
                    await ws.send_str("WSOK\r\n")
                elif name == "create_session":
                    session = await self._create_session(ws, request.transport, _params(lines[0]))
                    if session is None:
                        break
                    probes = asyncio.ensure_future(self._probe(ws))
                elif name == "bind_session":
                    await ws.send_str("CONERR,20,Unknown%20session\r\n")
                    break
                elif name == "control" and session is not None:
                    for line in filter(None, lines):
                        if not await self._control(session, _params(line)):
                            break
        finally:
            self._transports.discard(request.transport)
            if probes:
                probes.cancel()
            if session is not None:
                self._sessions.pop(session.id, None)
        if not ws.closed:
            await ws.close()
        return ws

    async def _create_session(self, ws, transport, params: dict) -> _Session | None:
        valid = params.get("LS_user") == self.account and params.get("LS_password") in self._valid
        if self.refuse_sessions or not valid:
            await ws.send_str("CONERR,1,User%2Fpassword%20check%20failed\r\n")
            return None
        self.sessions_created += 1
        session = _Session(f"S{next(self._ids)}", ws, transport)
        self._sessions[session.id] = session
        await ws.send_str(f"CONOK,{session.id},50000,{self.keepalive_ms},*\r\nSERVNAME,tlcp-test\r\n"
                          f"CLIENTIP,127.0.0.1\r\nCONS,unlimited\r\n")
        return session

    async def _control(self, session: _Session, params: dict) -> bool:
        op, request_id = params.get("LS_op"), params.get("LS_reqId")
        ack = params.get("LS_ack") != "false"
        if ack and op != "destroy":
            await session.ws.send_str(f"REQOK,{request_id}\r\n")
        if op == "add":
            sub_id, items = params["LS_subId"], params["LS_group"].split(" ")
            fields = params["LS_schema"].split(" ")
            session.subscriptions[sub_id] = (items, fields)
            self.subscriptions += 1
            await session.ws.send_str(f"SUBOK,{sub_id},{len(items)},{len(fields)}\r\n")
            for item in items:
                if params.get("LS_snapshot") == "true" and item in self._state:
                    await self._send_update(session, sub_id, item)
        elif op == "delete":
            session.subscriptions.pop(params["LS_subId"], None)
            await session.ws.send_str(f"UNSUB,{params['LS_subId']}\r\n")
        elif op == "destroy":
            return False
        return True

    async def _probe(self, ws) -> None:
        while not ws.closed:
            await asyncio.sleep(self.keepalive_ms / 1000)
            if not ws.closed:
                await ws.send_str("PROBE\r\n")

    async def _publish(self, item: str, fields: dict) -> None:
        self._state.setdefault(item, {}).update(fields)
        for session in list(self._sessions.values()):
            for sub_id, (subscribed, _) in list(session.subscriptions.items()):
                if item in subscribed:
                    await self._send_update(session, sub_id, item)

    async def _send_update(self, session: _Session, sub_id: str, item: str) -> None:
        items, fields = session.subscriptions[sub_id]
        state, sent = self._state[item], session.sent.setdefault((sub_id, item), {})
        values = []
        for name in fields:
            value = state.get(name)
            values.append("" if name in sent and sent[name] == value else encode_value(value))
            sent[name] = value
        if not session.ws.closed:
            await session.ws.send_str(f"U,{sub_id},{items.index(item) + 1},{'|'.join(values)}\r\n")

    async def _drop(self) -> None:
        for session in list(self._sessions.values()):
            session.transport.abort()
        self._sessions.clear()

    async def _end(self, code: int, message: str) -> None:
        for session in list(self._sessions.values()):
            await session.ws.send_str(f"END,{code},{encode_value(message)}\r\n")
            await session.ws.close()
        self._sessions.clear()

    def __repr__(self) -> str:
        return f"TlcpServer({self.url}, {json.dumps({'logins': self.logins, 'sessions': self.sessions_created})})"
