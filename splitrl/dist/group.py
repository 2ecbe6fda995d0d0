"""Rendezvous and process groups on torch.distributed (gloo on CPU, NCCL on GPU).

Design:

* The ranks meet on one ``TCPStore``. Whoever starts the run hosts it (the local driver of
  ``splitrl pipeline generate`` / ``splitrl tp generate``, or rank 0 when ranks are started by hand
  on several machines). A store hosted by a driver that computes nothing survives any rank's
  death, which is what lets the survivors re-form.
* A group is formed with ``init_process_group(store=PrefixStore(f"gen{g}/", store))``; generation
  ``g`` increases on every re-formation, so keys of a dead generation never collide with the new
  one ("new groups on the same store").
* Call `leave_group` before the process exits: a gloo group still alive at interpreter teardown
  can abort the process (``terminate called without an active exception``).
* gloo has no authentication or encryption: anyone who reaches the port can join or inject
  tensors. `check_trusted` therefore refuses a non-loopback rendezvous address unless the user
  passed an explicit trusted-network flag.
* The hosted store listens only on the asked address (loopback by default): torch's own TCPStore
  server binds every interface whatever host it is given, so `connect_store` binds the listening
  socket itself and hands its descriptor to the store (``master_listen_fd``).
* Every collective and point-to-point operation gets a finite timeout (`DEFAULT_TIMEOUT_S`
  unless told): a dead peer must become an error, never a hang.
"""
from __future__ import annotations

import datetime as _dt
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from splitrl.errors import UsageError
from splitrl.network import is_loopback

__all__ = [
    "DEFAULT_TIMEOUT_S", "Endpoint", "GroupHandle", "backend_for", "check_trusted", "connect_store", "form_group",
    "leave_group",
]

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    """A ``host:port`` rendezvous address (port 0 = let the OS pick, for a store we host)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise UsageError("address: host must not be empty (e.g. 127.0.0.1:29500)")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise UsageError(f"address {self.host}:{self.port}: port must be an integer in 0..65535")

    @classmethod
    def parse(cls, text: str, *, field: str = "--master") -> "Endpoint":
        """Parse ``HOST:PORT`` (IPv6 as ``[::1]:PORT``); the message names ``field`` on error."""
        text = str(text).strip()
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise UsageError(f"{field} must be HOST:PORT (e.g. 127.0.0.1:29500), got {text!r}")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            return cls(host, int(port))
        except UsageError as e:
            raise UsageError(f"{field}: {e}") from None

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def check_trusted(endpoint: Endpoint, trusted_network: bool, *, flag: str = "--trusted-network") -> None:
    """Refuse a non-loopback rendezvous unless the user said the network is trusted (gloo has no auth)."""
    if not is_loopback(endpoint.host) and not trusted_network:
        raise UsageError(
            f"rendezvous address {endpoint} is not loopback: torch.distributed (gloo) has no authentication or "
            f"encryption, so anyone who reaches it can join the group. Use 127.0.0.1 or pass {flag} "
            "on a network you trust (a private LAN or a VPN)"
        )


def backend_for(device: str | torch.device | None = None) -> str:
    """``nccl`` for CUDA devices when available, else ``gloo``."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def _listen_socket(endpoint: Endpoint) -> int:
    """A listening TCP socket bound to exactly ``endpoint`` (port 0: a free one); returns its detached fd."""
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise OSError(f"cannot resolve {endpoint.host!r}: {e}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock.detach()  # the store owns (and closes) the descriptor from here on


def connect_store(endpoint: Endpoint, *, host_store: bool, timeout_s: float = DEFAULT_TIMEOUT_S) -> dist.TCPStore:
    """Host (``host_store``) or join the TCP store at ``endpoint``; a hosted store on port 0 picks a free port.

    A hosted store listens on ``endpoint.host`` only (see the module docstring), never on every interface.
    """
    timeout = _dt.timedelta(seconds=float(timeout_s))
    fd = None
    try:
        if host_store:
            fd = _listen_socket(endpoint)
            return dist.TCPStore(endpoint.host, endpoint.port, None, True, timeout, wait_for_workers=False,
                                 master_listen_fd=fd)
        return dist.TCPStore(endpoint.host, endpoint.port, None, False, timeout, wait_for_workers=False)
    except (RuntimeError, OSError) as e:
        if fd is not None:
            try:
                socket.socket(fileno=fd).close()
            except OSError:
                pass
        what = "host" if host_store else "reach"
        raise RuntimeError(f"could not {what} the rendezvous store at {endpoint}: {e}") from None


@dataclass
class GroupHandle:
    """The process group this process is in: generation, rank and size within it, backend."""

    generation: int
    rank: int
    world_size: int
    backend: str
    timeout_s: float


def form_group(
    store: dist.Store,
    rank: int,
    world_size: int,
    *,
    generation: int = 0,
    backend: str = "gloo",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> GroupHandle:
    """Join generation ``generation`` of the default process group as ``rank`` of ``world_size``.

    A process already in a group leaves it first, so re-forming after a failure is one call with
    the next generation and the survivors' new ranks.
    """
    if not 0 <= rank < world_size:
        raise UsageError(f"rank must be in 0..{world_size - 1} for a world of {world_size}, got {rank}")
    leave_group()
    timeout = _dt.timedelta(seconds=float(timeout_s))
    dist.init_process_group(
        backend=backend, store=dist.PrefixStore(f"gen{int(generation)}/", store), rank=rank,
        world_size=world_size, timeout=timeout,
    )
    return GroupHandle(int(generation), rank, world_size, backend, float(timeout_s))


def leave_group() -> None:
    """Destroy the default process group if this process is in one (safe to call when not)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # a group whose peers died may fail to tear down cleanly; it is gone anyway
            pass
