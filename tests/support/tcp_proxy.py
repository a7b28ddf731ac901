"""A loopback TCP proxy a test can cut: every connection through it breaks at once, as on a
mobile network or behind a proxy that restarts, while new connections still get through."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from urllib.parse import urlsplit

from tests.support.sockets import loopback_socket, url_of

_CHUNK = 65_536


class TcpProxy:
    """Relays each connection to `upstream` (an `http://127.0.0.1:PORT` URL), byte for byte, on
    threads of its own; `cut()` resets the open ones. `connections` counts those accepted."""

    def __init__(self, upstream: str) -> None:
        where = urlsplit(upstream)
        self._upstream = (where.hostname or "127.0.0.1", where.port or 80)
        self._listener = loopback_socket()
        self._listener.listen()
        self.url = url_of(self._listener)
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)  # to see close() without a wake-up of its own
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            client.settimeout(None)
            try:
                server = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self.connections += 1
                self._open |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
        except OSError:
            pass  # cut, or the other side went away
        finally:
            self._drop(src)
            self._drop(dst)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> int:
        """Break every connection open now (a reset, not a clean end); how many there were."""
        with self._lock:
            socks, self._open = list(self._open), set()
        for sock in socks:
            with contextlib.suppress(OSError):
                # Linger 0: closing sends a RST, as a dropped network path looks to the peer.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(socks) // 2

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._thread.join(timeout=5)
        self._listener.close()
        self.cut()
