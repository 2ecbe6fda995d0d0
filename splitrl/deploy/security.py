"""What the network services trust: bearer tokens, TLS material and which addresses may be bound.

* Every stream and every HTTP request carries ``authorization: Bearer <token>``; the server checks
  it with `hmac.compare_digest` (constant time) and refuses anything else with a clear error while
  it keeps serving others. Tokens live in files (never on the command line, where ``ps`` shows
  them); `ensure_token_file` creates one with 256 random bits, mode 0600, when it is missing.
  A token file other users can read is still accepted, with a warning naming the fix (as ssh
  warns about a world-readable key).
* Servers bind loopback unless told. Binding any other address needs TLS (certificate + key) or
  an explicit ``--insecure``: a bearer token sent in clear text over a network is a password on a
  postcard.
"""
from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from splitrl.log import get_logger
from splitrl.errors import UsageError
from splitrl.network import is_loopback

__all__ = ["check_bind", "check_token", "ensure_token_file", "is_loopback", "parse_address", "read_token"]

_MAX_TOKEN = 512
log = get_logger("security")


def parse_address(text: str, field: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); port 0 lets the OS pick."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{field} must be HOST:PORT with a port in 0..65535 (e.g. 127.0.0.1:50051), got {text!r:.80}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def check_bind(host: str, *, tls: bool, insecure: bool) -> None:
    """Refuse a non-loopback bind without TLS unless ``insecure`` was asked for explicitly."""
    if not is_loopback(host) and not tls and not insecure:
        raise UsageError(
            f"--listen {host}: binding a non-loopback address sends the bearer token and the activations in "
            "clear text; pass --tls-cert and --tls-key, or --insecure on a network you trust"
        )


def read_token(path: str | Path, field: str = "--token-file") -> str:
    """The bearer token in ``path`` (one line, printable ASCII, 16..512 characters)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{field}: no token file at {p} (the edge creates one on its first start)")
    try:
        raw = p.read_bytes()[: _MAX_TOKEN + 2]
        token = raw.decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{field}: {p} is not a readable ASCII token file ({type(e).__name__})") from None
    if not 16 <= len(token) <= _MAX_TOKEN or not token.isprintable() or " " in token:
        raise UsageError(f"{field}: the token in {p} must be 16..{_MAX_TOKEN} printable characters without spaces")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        log.warning("%s %s is readable by other users (mode %04o): anyone on this machine can use the "
                    "bearer token; run chmod 600 %s", field, p, mode, p)
    return token


def ensure_token_file(path: str | Path) -> tuple[str, bool]:
    """(token, created): read ``path``, or create it with a fresh random token (mode 0600)."""
    p = Path(path)
    if p.exists():
        return read_token(p), False
    token = secrets.token_urlsafe(32)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def check_token(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of an ``authorization`` header value with ``Bearer <expected>``."""
    if not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), f"Bearer {expected}".encode())
