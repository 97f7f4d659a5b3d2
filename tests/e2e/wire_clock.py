"""A TCP relay in front of the app server that notes when a marker first passes from the server to the browser.

Why: the load test times when a session's result reaches its browser. Chromium reports a websocket frame from the
renderer's main thread, after it has drawn everything that came before it. The test's browsers run at idle
priority, six to two cores, so that time also counts the other browsers' drawing; in a classroom each student's
browser draws on its own machine. The relay's threads are started at normal priority (create it outside the
niced students' thread), so the time they note is when the server had sent the result.
Streamlit's websocket is uncompressed by default (`server.enableWebsocketCompression`), so the marker's bytes
appear as they are in the stream.
"""

from __future__ import annotations

import socket
import threading
import time


class WireClock:
    """Listens on a free loopback port and relays every connection to `target` ("host", port).

    `url` is the address to browse; `seen_at` is the `time.monotonic()` at which `marker` first came from the server
    after `arm()` (None until then)."""

    def __init__(self, target: tuple[str, int], marker: bytes):
        self.target, self.marker = target, marker
        self.seen_at: float | None = None
        self._armed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        """Start looking for the marker now (a page drawn before, e.g. an earlier result, does not count)."""
        self.seen_at, self._armed = None, True

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                browser_side, _ = self._listener.accept()
            except OSError:
                return
            server_side = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(browser_side, server_side, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server_side, browser_side, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        tail = b""  # the end of the previous read, so a marker split across two reads is still found
        try:
            while chunk := source.recv(65536):
                if from_server and self._armed and self.seen_at is None and self.marker in tail + chunk:
                    self.seen_at = time.monotonic()
                tail = chunk[-len(self.marker):]
                sink.sendall(chunk)
        except OSError:
            pass
        finally:  # one side ended: end the other side's pump too; each socket is the source of one pump
            try:
                sink.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            source.close()
