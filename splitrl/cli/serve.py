"""``splitrl serve``: the OpenAI-compatible endpoint on the UE side (FastAPI + uvicorn).

``--edge HOST:PORT`` serves through the remote UE client (`splitrl.deploy.client.UEClient`: layers
``[0, s)`` here, the rest on the edge server); ``--local`` serves with the whole model in this
process (`LocalBackend`). The controller (``--checkpoint``, ``--agent`` or ``--split``) picks the
split per request from the emulated channel (``--channel``). Binds 127.0.0.1 unless told; a
non-loopback address needs TLS (``--tls-cert/--tls-key``) or an explicit ``--insecure``.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from splitrl.cli._common import COMPILE_HELP, warm_up_compiled
from splitrl.deploy.security import read_token
from splitrl.errors import UsageError
from splitrl.log import configure_logging
from splitrl.quant.precision import PRECISIONS
from splitrl.network import is_loopback


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port`` 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"--host/--port: cannot bind {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    return sock


def add_arguments(p) -> None:
    p.add_argument("--edge", default=None, help="edge server HOST:PORT (the remote UE client)")
    p.add_argument("--local", action="store_true", help="serve with the whole model in this process (no edge)")
    p.add_argument("--token-file", required=True, help="bearer token for the edge and for this HTTP API")
    p.add_argument("--checkpoint", default=None, help="trained run folder checkpoints/<run> (or a checkpoint folder)")
    p.add_argument("--agent", default=None, help="exact baseline instead of a checkpoint (oracle, fixed, latency-only, ...)")
    p.add_argument("--split", type=int, default=None, help="a fixed split for every request instead of a policy")
    p.add_argument("--model", default=None, help="model for --agent/--split (default: the env config's)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="weight precision of this process's model (with --edge: the UE's layers; the edge reports its own)")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--channel", default="fading", help="fading | markov | trace:FILE.csv | FILE.csv | spec.yaml")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="env config overrides as in train.py: env.transport=int8-biterr, env.reward.w_energy=2, ...")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (a non-loopback one needs TLS or --insecure)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (see --port-file)")
    p.add_argument("--port-file", default=None, help="write the bound port here once listening")
    p.add_argument("--tls-cert", default=None, help="PEM certificate: serve HTTPS (with --tls-key)")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without TLS")
    p.add_argument("--tls-root", default=None, help="PEM root certificate to verify a TLS edge (--edge)")
    p.add_argument("--server-name", default=None, help="TLS server name of the edge, when it differs from the host")
    p.add_argument("--air-time", default="off", help="--edge: release frames after the emulated air time: off | real | a scale (0.1 = 10x faster than real time)")
    p.add_argument("--max-tokens-limit", type=int, default=512, help="largest max_tokens a request may ask for")
    p.add_argument("--out", default=None, help="new folder for the decision log (default: runs/serve/<time>-<pid>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the channel process, the policy and the link noise")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def run(args) -> int:
    # lazy: --help and argument errors must not import torch
    import uvicorn

    from splitrl.controller.session import build_server, env_overrides
    from splitrl.controller.sinks import DECISIONS_FILE, JsonlSink, TensorBoardSink, claim_session_dir
    from splitrl.proc import write_port_file
    from splitrl.serve.app import create_app

    if bool(args.edge) == bool(args.local):
        raise UsageError("give exactly one of --edge HOST:PORT (remote edge) or --local (everything in this process)")
    if sum(x is not None for x in (args.checkpoint, args.agent, args.split)) != 1:
        raise UsageError("give exactly one of --checkpoint, --agent or --split")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if args.max_tokens_limit < 1:
        raise UsageError("--max-tokens-limit must be >= 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not is_loopback(args.host) and not args.tls_cert and not args.insecure:
        raise UsageError(f"--host {args.host} is not loopback: give --tls-cert/--tls-key, or --insecure to serve plain HTTP")
    token = read_token(args.token_file)
    env = env_overrides(args.overrides)
    if args.model:
        env["model"] = args.model

    factory = None
    if args.edge:
        # lazy: --help and argument errors must not import torch
        try:
            from splitrl.deploy.client import UEClient
        except ImportError as e:
            raise UsageError(f"--edge needs splitrl.deploy.client, which this build lacks ({e}); use --local") from None

        if args.tls_root and not Path(args.tls_root).is_file():
            raise UsageError(f"--tls-root: {args.tls_root} not found")
        tls_root = Path(args.tls_root).read_bytes() if args.tls_root else None

        def factory(loaded, env_cfg):
            # The UE holds every layer, so it can finish any request locally after a fallback.
            try:
                return UEClient(args.edge, token, loaded, tls_root=tls_root, server_name=args.server_name,
                                air_time=args.air_time, link_profile=env_cfg.link_profile,
                                ue_profile=env_cfg.ue_profile, edge_profile=env_cfg.edge_profile)
            except (OSError, RuntimeError, ValueError) as e:
                raise UsageError(f"--edge {args.edge}: {e}".splitlines()[0]) from None

    try:
        server, loaded, env_cfg = build_server(checkpoint=args.checkpoint, agent=args.agent, env=env,
                                               channel=args.channel, seed=args.seed, backend_factory=factory,
                                               split=args.split, precision=args.precision)
    except UsageError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    loaded.view.compile_decode = args.compile
    out = claim_session_dir(args.out or Path("runs") / "serve" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    sinks = [JsonlSink(out / DECISIONS_FILE), TensorBoardSink(out, "serve")]
    app = create_app(server, token=token, model_name=loaded.name, max_tokens_limit=args.max_tokens_limit, sinks=sinks)
    configure_logging()  # the UE client's fallbacks and the policy's warnings, in the project's format
    warm_up_compiled(loaded, 0, loaded.view.num_layers)
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
                            timeout_graceful_shutdown=5)
    if args.port_file:
        write_port_file(args.port_file, port)  # the socket already listens: early clients wait in its backlog
    scheme = "https" if args.tls_cert else "http"
    print(f"splitrl serve: {loaded.name} on {scheme}://{args.host}:{port}/v1 ({server.policy.name}, "
          f"{'edge ' + args.edge if args.edge else 'local'}); decision log {out / DECISIONS_FILE}", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sink in sinks:
            sink.close()
        sock.close()
    return 0
