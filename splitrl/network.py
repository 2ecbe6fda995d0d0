"""Network addresses: which hosts are loopback (servers bind those unless told otherwise)."""
from __future__ import annotations

import ipaddress
import socket

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1, or a name that resolves only to loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)
