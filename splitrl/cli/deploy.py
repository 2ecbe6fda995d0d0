"""``splitrl edge`` (the edge server) and ``splitrl ue`` (the UE side, one request per split given).

Two commands in one module: `add_edge_arguments` / `run_edge` and `add_ue_arguments` / `run_ue`.
"""
from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from splitrl.cli._common import COMPILE_HELP, warm_up_compiled
from splitrl.errors import UsageError
from splitrl.log import configure_logging
from splitrl.quant.precision import PRECISIONS

__all__ = ["add_edge_arguments", "add_ue_arguments", "run_edge", "run_ue"]

# Copies of splitrl.deploy.server's (importing it imports torch); tests/test_cli_package.py checks them.
DEFAULT_IDLE_TIMEOUT_S = 30.0
DEFAULT_MAX_STREAMS_PER_CLIENT = 4


def _layers(text: str | None, L: int) -> tuple[int, int]:
    """``START:STOP`` / ``START:`` / ``all`` -> (start, stop) within 0..L."""
    if text in (None, "all"):
        return 0, L
    a, sep, b = str(text).partition(":")
    try:
        start = int(a) if a else 0
        stop = int(b) if b else L
    except ValueError:
        raise UsageError(f"--layers must be START:STOP, START: or all (0 <= START <= STOP <= {L}), got {text!r}") from None
    if not sep or not 0 <= start <= stop <= L:
        raise UsageError(f"--layers must be START:STOP, START: or all (0 <= START <= STOP <= {L}), got {text!r}")
    return start, stop


def _model_layers(model: str, cache_dir: str | None) -> int:
    """Number of layers of ``model`` without materialising it (config only)."""
    # lazy: --help and argument errors must not import torch
    from splitrl.models import load_model

    # A meta-only load reads the config and no weights.
    return load_model(model, cache_dir=cache_dir, layers=(0, 0), embed=False, head=False).view.num_layers


def _load_part(args, start: int, stop: int, embed: bool, head: bool):
    # lazy: --help and argument errors must not import torch
    from splitrl.models import ModelNotFoundError, UnsupportedModelError, load_model

    try:
        full = (start, stop, embed, head)
        L = _model_layers(args.model, args.cache_dir)
        precision = args.precision
        if full == (0, L, True, True):
            return load_model(args.model, cache_dir=args.cache_dir, precision=precision, compile_decode=args.compile)
        return load_model(args.model, cache_dir=args.cache_dir, layers=(start, stop), embed=embed, head=head,
                          precision=precision, compile_decode=args.compile)
    except (ModelNotFoundError, UnsupportedModelError) as e:
        raise UsageError(f"--model: {e}") from None


def add_edge_arguments(p) -> None:
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to bind (port 0 picks a free one) (default: %(default)s)")
    p.add_argument("--token-file", required=True, help="bearer token file; created (mode 0600) when missing")
    p.add_argument("--port-file", default=None, help="write the bound port here once serving")
    p.add_argument("--model", default="smollm2-135m", help="model name or path (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="cache for dequantised GGUF models (default $SPLITRL_CACHE or ~/.cache/splitrl)")
    p.add_argument("--layers", default="0:", help="decoder layers this edge holds, START:STOP or START: (default: %(default)s = all)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="weight precision of the layers this edge runs (int4 uses a GGUF's own Q4_1 codes) (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--tls-cert", default=None, help="PEM certificate (TLS); required off loopback unless --insecure")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without TLS (trusted networks only)")
    p.add_argument("--max-sessions", type=int, default=16, help="concurrent requests (default: %(default)s)")
    p.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S, metavar="SECONDS",
                   help="cancel a stream that waits longer than this for its next frame (default: %(default)s)")
    p.add_argument("--max-streams-per-client", type=int, default=DEFAULT_MAX_STREAMS_PER_CLIENT, metavar="N",
                   help="open streams one client connection may hold at once (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $SPLITRL_THREADS or torch's)")


def run_edge(args) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.deploy.security import check_bind, ensure_token_file, parse_address
    from splitrl.deploy.server import EdgeServer
    from splitrl.proc import write_port_file

    host, port = parse_address(args.listen)
    tls = None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        try:
            tls = (Path(args.tls_cert).read_bytes(), Path(args.tls_key).read_bytes())
        except OSError as e:
            raise UsageError(f"--tls-cert/--tls-key: {e}") from None
    check_bind(host, tls=tls is not None, insecure=args.insecure)
    if not 1 <= args.max_sessions <= 1024:
        raise UsageError(f"--max-sessions must be in 1..1024, got {args.max_sessions}")
    if not 0 < args.idle_timeout <= 86400:  # (NaN fails too)
        raise UsageError(f"--idle-timeout must be a number of seconds in (0, 86400], got {args.idle_timeout}")
    if not 1 <= args.max_streams_per_client <= 1024:
        raise UsageError(f"--max-streams-per-client must be in 1..1024, got {args.max_streams_per_client}")
    token, created = ensure_token_file(args.token_file)
    L = _model_layers(args.model, args.cache_dir)
    start, stop = _layers(args.layers, L)
    if stop != L:
        raise UsageError(f"--layers: the edge runs the last segment, so it must hold layers up to {L} (got {args.layers})")
    loaded = _load_part(args, start, stop, embed=(start == 0), head=True)
    configure_logging()
    warm_up_compiled(loaded, start, stop)   # before the port file: no request waits on the compiler
    server = EdgeServer(loaded, token, max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout,
                        max_streams_per_client=args.max_streams_per_client)
    try:
        bound = server.start(host, port, tls=tls)
    except (OSError, RuntimeError) as e:
        raise UsageError(f"--listen {args.listen}: {e}") from None
    if args.port_file:
        write_port_file(args.port_file, bound)
    print(f"splitrl edge: serving {loaded.name} layers [{start}, {stop}) + head on {host}:{bound} "
          f"({'TLS' if tls else 'plaintext'}; token in {args.token_file}{', new' if created else ''})", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(grace_s=1.0)
    return 0


def add_ue_arguments(p) -> None:
    p.add_argument("--edge", default="127.0.0.1:50051", help="edge HOST:PORT (default: %(default)s)")
    p.add_argument("--token-file", required=True, help="the edge's bearer token file")
    p.add_argument("--model", default="smollm2-135m", help="model name or path, the same as the edge's (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="cache for dequantised GGUF models (default $SPLITRL_CACHE or ~/.cache/splitrl)")
    p.add_argument("--ue-layers", default="all", help="layers the UE holds: all (can finish any request on a fallback) or 0:S (default: %(default)s)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="weight precision of the UE's layers; the edge's comes from its handshake (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--split", default="15", help="split point, or a comma list: one request per split, re-split between requests (default: %(default)s)")
    p.add_argument("--prompt", default="Edge computing lets a phone offload part of a neural network because",
                   help="prompt text")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate per request")
    p.add_argument("--link", default="identity", help="what crosses the cut (identity, int8, awgn, int8-biterr, ...)")
    p.add_argument("--snr", type=float, default=20.0, help="slot SNR in dB for the emulated link (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the link noise (request i uses seed + i)")
    p.add_argument("--air-time", default="off", help="off | real | a scale (0.1 = 10x faster than real time) (default: %(default)s)")
    p.add_argument("--link-profile", default="nr-sub6-20mhz", help="radio link profile for the air time (name or YAML)")
    p.add_argument("--tls-root", default=None, help="PEM root certificate to verify a TLS edge")
    p.add_argument("--server-name", default=None, help="TLS server name to verify (when it differs from the host)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print every request's text, token ids and report as JSON")


def run_ue(args) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.deploy.client import UEClient
    from splitrl.deploy.security import parse_address, read_token
    from splitrl.runtime import ExecutorError, SamplingConfig

    parse_address(args.edge, "--edge")
    token = read_token(args.token_file)
    L = _model_layers(args.model, args.cache_dir)
    start, stop = _layers(args.ue_layers, L)
    if start != 0:
        raise UsageError(f"--ue-layers must start at 0 (the UE embeds the prompt), got {args.ue_layers}")
    try:
        splits = [int(x) for x in args.split.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--split must be integers 0..{L}, comma-separated, got {args.split!r}") from None
    if not splits or any(not 0 <= s <= L for s in splits):
        raise UsageError(f"--split must be integers 0..{L}, comma-separated, got {args.split!r}")
    if any(s > stop for s in splits):
        raise UsageError(f"--split {max(splits)} needs UE layers up to it; --ue-layers holds [0, {stop})")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    tls_root = Path(args.tls_root).read_bytes() if args.tls_root else None
    loaded = _load_part(args, 0, stop, embed=True, head=(stop == L))
    configure_logging()  # fallbacks and edge health go to stderr; stdout is the command's output
    warm_up_compiled(loaded, 0, stop)
    try:
        ue = UEClient(args.edge, token, loaded, tls_root=tls_root, server_name=args.server_name,
                      air_time=args.air_time, link_profile=args.link_profile)
    except (ExecutorError, ValueError) as e:
        raise UsageError(f"--edge {args.edge}: {e}") from None
    ids = loaded.tokenizer(args.prompt, return_tensors="pt").input_ids
    out = []
    try:
        for i, s in enumerate(splits):
            try:
                r = ue.generate(ids, s, link=args.link, snr_db=args.snr, seed=args.seed + i,
                                sampling=SamplingConfig(), max_new_tokens=args.max_new_tokens)
            except (ExecutorError, ValueError) as e:
                raise UsageError(str(e)) from None
            out.append({"split": s, "text": r.text, "token_ids": r.token_ids, "report": r.report.to_dict()})
            if not args.json:
                print(f"== split {s} ==\n{args.prompt}{r.text}\n{r.report.format()}\n", flush=True)
    finally:
        ue.close()
    if args.json:
        print(json.dumps(out))
    return 0
