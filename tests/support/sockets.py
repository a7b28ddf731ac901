"""Loopback sockets for tests: one bound to a port the OS chose, and a port nobody listens on."""

from __future__ import annotations

import socket


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a port the OS chose on 127.0.0.1 (not listening yet)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def free_port() -> int:
    """A loopback port nothing listens on (the OS just handed it out and it was released): for
    a server process to bind, or for a client to be refused on."""
    with loopback_socket() as sock:
        return int(sock.getsockname()[1])
