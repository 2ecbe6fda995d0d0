"""UE and edge as separate processes: the wire format, the gRPC edge server, the UE client.

* `wire` — length-prefixed msgpack header + the raw bytes `splitrl.link` produces (no pickle).
* `security` — bearer tokens (constant-time check), TLS material, which addresses may be bound.
* `server` — `EdgeServer` (``splitrl edge``): one bidirectional gRPC stream per request, running
  the edge's segment with `splitrl.runtime.LocalExecutor`.
* `client` — `RemoteExecutor` (the executor contract over a stream, with deadlines, keepalive and
  emulated air time) and `UEClient` (``splitrl ue`` / ``splitrl serve``: the UE side with the
  handshake, exact local fallback and the edge's health).
"""
