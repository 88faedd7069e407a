"""An aiohttp application served on 127.0.0.1 from a background thread (the endpoint server, the console)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable

from aiohttp import web

from livetrain.errors import UserError


class BackgroundApp:
    """`start()` binds 127.0.0.1:`port` (0: any free port) and returns the URL; `stop()` shuts it down.
    `keepalive_timeout` also bounds how long a new connection may take to send a request's headers (aiohttp's
    keep-alive timer runs from the connection's start)."""

    def __init__(self, make_app: Callable[[], web.Application], port: int = 0, *, keepalive_timeout: float = 75.0,
                 name: str = "app-server"):
        self.make_app, self.port, self.keepalive_timeout, self.name = make_app, port, keepalive_timeout, name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure
        return self.url

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self.make_app(), access_log=None, keepalive_timeout=self.keepalive_timeout)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            self.port = runner.addresses[0][1]
        except BaseException as exc:
            self._failure = exc
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        if self.running:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_until_stopped(server: BackgroundApp, announce: Callable[[str], None]) -> None:
    """A command's foreground server: start it, announce its URL, serve until Ctrl-C or SIGTERM, stop it."""
    try:
        url = server.start()
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{server.port} ({exc.strerror}); choose another --port") from None
    announce(url)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
