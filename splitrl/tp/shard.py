"""Per-rank weights: slicing the full model by a `ShardPlan`, the shard files, and the rank's model.

Shard directory layout (written once by the driver with `write_shards`; plain safetensors + JSON,
never pickle)::

    manifest.json                 plan, dtype, model name, files and their sizes
    config.json                   the Hugging Face config of the full model
    rank{r}/common.safetensors    rotary buffers (every rank)
    rank0/master.safetensors      embeddings, final norm, LM head (the master only)
    rank{r}/layer{l:03d}.attn.safetensors   input norm + this rank's attention heads
    rank{r}/layer{l:03d}.ffn.safetensors    post-attention norm + this rank's FFN columns

A rank builds the full architecture on the ``meta`` device (no memory), swaps every layer's
attention and MLP for local-sized modules whose output projections are *row-parallel*
(`RowParallelLinear` / `RowParallelConv1D`: partial product -> all-reduce -> bias added once),
and then loads weights block by block — all at once, or through the sliding-window scheduler.
Column-parallel pieces (Q/K/V, gate/up, ``c_attn``, ``c_fc``) are ordinary modules with sliced
weights, so Hugging Face's own layer code (norms, rotary, KV cache, masks, SDPA) runs unchanged.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from splitrl.models.view import DecoderView
from splitrl.tp.plan import ModelDims, RankShard, ShardPlan
from splitrl.errors import UsageError

__all__ = [
    "BLOCK_KINDS", "RankModel", "RowParallelConv1D", "RowParallelLinear", "block_names", "block_path",
    "rank_block_state", "write_shards", "load_block_file", "BufferPool",
]

BLOCK_KINDS = ("attn", "ffn")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Reducer:
    """A swappable holder for the rank's all-reduce (modules keep a reference to this, not to the op)."""

    def __init__(self) -> None:
        self.op: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.world = 1


class RowParallelLinear(nn.Module):
    """``y = allreduce(x_local @ W_local^T) + b``: the bias is added once, after the reduce.

    With one rank there is nothing to reduce and the call is exactly ``F.linear(x, W, b)``, the
    unsplit model's own operation (bit-identical).
    """

    def __init__(self, in_local: int, out_features: int, bias: bool, reducer: Reducer) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_local))  # [out, in_local]
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reducer = reducer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reducer.world == 1:
            return F.linear(x, self.weight, self.bias)
        y = self.reducer.op(F.linear(x, self.weight))  # partial sum over this rank's inputs
        return y + self.bias if self.bias is not None else y


class RowParallelConv1D(nn.Module):
    """GPT-2's ``Conv1D`` (``y = x @ W + b``, W ``[in, out]``) with rows split across ranks."""

    def __init__(self, out_features: int, in_local: int, reducer: Reducer) -> None:
        super().__init__()
        self.nf = out_features
        self.weight = nn.Parameter(torch.empty(in_local, out_features))  # [in_local, out]
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reducer = reducer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x2 = x.view(-1, x.size(-1))
        if self.reducer.world == 1:
            return torch.addmm(self.bias, x2, self.weight).view(size_out)
        y = self.reducer.op(torch.mm(x2, self.weight))
        return (y + self.bias).view(size_out)


# ---- slicing -------------------------------------------------------------------------------

def _head_rows(heads: tuple[int, ...], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def _c(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().clone()


def rank_block_state(layer: nn.Module, dims: ModelDims, shard: RankShard, kind: str) -> dict[str, torch.Tensor]:
    """The tensors of block ``kind`` (``attn``/``ffn``) of one full layer that ``shard`` owns.

    Keys are relative to the layer module (``self_attn.q_proj.weight``, ``mlp.c_fc.weight``...).
    """
    hd = dims.head_dim
    q_rows = _head_rows(shard.q_heads, hd)
    kv_rows = _head_rows(shard.kv_heads, hd)
    a, b = shard.ffn
    out: dict[str, torch.Tensor] = {}
    if dims.family == "llama":
        if kind == "attn":
            att = layer.self_attn
            out["input_layernorm.weight"] = _c(layer.input_layernorm.weight)
            out["self_attn.q_proj.weight"] = _c(att.q_proj.weight[q_rows])
            out["self_attn.k_proj.weight"] = _c(att.k_proj.weight[kv_rows])
            out["self_attn.v_proj.weight"] = _c(att.v_proj.weight[kv_rows])
            out["self_attn.o_proj.weight"] = _c(att.o_proj.weight[:, q_rows])
            if att.q_proj.bias is not None:
                out["self_attn.q_proj.bias"] = _c(att.q_proj.bias[q_rows])
                out["self_attn.k_proj.bias"] = _c(att.k_proj.bias[kv_rows])
                out["self_attn.v_proj.bias"] = _c(att.v_proj.bias[kv_rows])
            if att.o_proj.bias is not None:
                out["self_attn.o_proj.bias"] = _c(att.o_proj.bias)  # replicated, added after the reduce
        else:
            mlp = layer.mlp
            out["post_attention_layernorm.weight"] = _c(layer.post_attention_layernorm.weight)
            out["mlp.gate_proj.weight"] = _c(mlp.gate_proj.weight[a:b])
            out["mlp.up_proj.weight"] = _c(mlp.up_proj.weight[a:b])
            out["mlp.down_proj.weight"] = _c(mlp.down_proj.weight[:, a:b])
            if mlp.gate_proj.bias is not None:
                out["mlp.gate_proj.bias"] = _c(mlp.gate_proj.bias[a:b])
                out["mlp.up_proj.bias"] = _c(mlp.up_proj.bias[a:b])
            if mlp.down_proj.bias is not None:
                out["mlp.down_proj.bias"] = _c(mlp.down_proj.bias)
    else:
        H = dims.hidden_size
        if kind == "attn":
            att = layer.attn
            out["ln_1.weight"], out["ln_1.bias"] = _c(layer.ln_1.weight), _c(layer.ln_1.bias)
            # c_attn is one fused Conv1D: columns [q | k | v], each H wide; keep this rank's heads of each.
            cols = torch.cat([q_rows, H + kv_rows, 2 * H + kv_rows])
            out["attn.c_attn.weight"] = _c(att.c_attn.weight[:, cols])
            out["attn.c_attn.bias"] = _c(att.c_attn.bias[cols])
            out["attn.c_proj.weight"] = _c(att.c_proj.weight[q_rows, :])
            out["attn.c_proj.bias"] = _c(att.c_proj.bias)
        else:
            mlp = layer.mlp
            out["ln_2.weight"], out["ln_2.bias"] = _c(layer.ln_2.weight), _c(layer.ln_2.bias)
            out["mlp.c_fc.weight"] = _c(mlp.c_fc.weight[:, a:b])
            out["mlp.c_fc.bias"] = _c(mlp.c_fc.bias[a:b])
            out["mlp.c_proj.weight"] = _c(mlp.c_proj.weight[a:b, :])
            out["mlp.c_proj.bias"] = _c(mlp.c_proj.bias)
    return out


def master_state(view: Any) -> dict[str, torch.Tensor]:
    """Embeddings, final norm and (untied) LM head, keyed by their names in the full model."""
    names: dict[int, str] = {}
    for n, p in view.model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), n)  # a tied weight keeps its first (embedding) name
    out: dict[str, torch.Tensor] = {}
    mods = [view.embed_tokens, view.final_norm] + ([view.position_embed] if view.position_embed is not None else [])
    if not getattr(view.config, "tie_word_embeddings", False):
        mods.append(view.lm_head)
    for m in mods:
        for p in m.parameters():
            out[names[id(p)]] = _c(p)
    return out


def common_state(view: Any) -> dict[str, torch.Tensor]:
    """Rotary buffers (every rank applies RoPE to its own heads); empty for GPT-2."""
    if view.rotary_emb is None:
        return {}
    return {f"rotary_emb.{n}": _c(b) for n, b in view.rotary_emb.named_buffers()}


def block_names(num_layers: int) -> list[str]:
    """Execution order of a rank's streamed blocks: layer0.attn, layer0.ffn, layer1.attn, ..."""
    return [f"layer{l:03d}.{k}" for l in range(num_layers) for k in BLOCK_KINDS]


def block_path(root: str | Path, rank: int, block: str) -> Path:
    return Path(root) / f"rank{rank}" / f"{block}.safetensors"


def write_shards(view: Any, plan: ShardPlan, root: str | Path, *, model_name: str = "", dtype: str = "float32") -> Path:
    """Write every rank's block files for ``plan`` under ``root`` (see the module docstring)."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, int] = {}
    for shard in plan.shards:
        d = root / f"rank{shard.rank}"
        d.mkdir(exist_ok=True)
        save_file(common_state(view), str(d / "common.safetensors"))
        if shard.is_master:
            save_file(master_state(view), str(d / "master.safetensors"))
        for l, layer in enumerate(view.layers):
            for kind in BLOCK_KINDS:
                p = d / f"layer{l:03d}.{kind}.safetensors"
                save_file(rank_block_state(layer, plan.dims, shard, kind), str(p))
        for p in d.iterdir():
            files[str(p.relative_to(root))] = p.stat().st_size
    view.config.to_json_file(str(root / "config.json"))
    manifest = {"format": "splitrl-tp-shards/1", "model": model_name, "dtype": dtype, "plan": plan.to_dict(),
                "dims": plan.dims.__dict__, "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}


class BufferPool:
    """Recycles the byte buffers of released blocks for the next loads.

    A streamed block is read into a buffer that a released block left behind, instead of a fresh
    allocation: a fresh one is new pages the kernel must fault in and zero on every token, which
    cost more than the copy itself. Buffers are keyed by size; `give` is called only after the
    block's parameters were replaced (no live tensor views the buffer any more).
    """

    def __init__(self) -> None:
        import threading

        self._free: dict[int, list[torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.reused = 0
        self.allocated = 0

    def take(self, nbytes: int) -> torch.Tensor:
        with self._lock:
            free = self._free.get(int(nbytes))
            if free:
                self.reused += 1
                return free.pop()
            self.allocated += 1
        return torch.empty(int(nbytes), dtype=torch.uint8)

    def give(self, state: dict[str, torch.Tensor]) -> None:
        """Return the buffers behind a released block's tensors (each storage once)."""
        seen: set[int] = set()
        with self._lock:
            for t in state.values():
                st = t.untyped_storage()
                if st.data_ptr() in seen:
                    continue
                seen.add(st.data_ptr())
                buf = torch.empty(0, dtype=torch.uint8).set_(st)  # the whole storage as bytes
                self._free.setdefault(buf.numel(), []).append(buf)


def load_block_file(path: str | Path, pool: BufferPool | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file into ordinary (anonymous) memory: no mmap stays behind.

    One ``readinto`` from the page cache into one buffer (recycled from ``pool`` when one is given),
    tensors are views of it (the streaming scheduler calls this for every block of every token, so a
    second copy would cost latency). The header is JSON (never pickle) and every offset is checked
    against the file size.
    """
    import struct

    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise UsageError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        size = path.stat().st_size
        if n > size - 8:
            raise UsageError(f"{path}: safetensors header length {n} exceeds the file")
        header = json.loads(f.read(n))
        data = pool.take(size - 8 - n) if pool is not None else torch.empty(size - 8 - n, dtype=torch.uint8)
        if f.readinto(memoryview(data.numpy())) != data.numel():
            raise UsageError(f"{path}: truncated safetensors data")
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _ST_DTYPES.get(info.get("dtype"))
        begin, end = (int(x) for x in info["data_offsets"])
        shape = [int(x) for x in info["shape"]]
        if dt is None or not 0 <= begin <= end <= data.numel():
            raise UsageError(f"{path}: bad entry {name!r} (dtype {info.get('dtype')}, offsets {begin}..{end})")
        nel = 1
        for d in shape:
            nel *= d
        if end - begin != nel * torch.empty((), dtype=dt).element_size():
            raise UsageError(f"{path}: entry {name!r} size does not match its shape {shape}")
        raw = data[begin:end]
        try:
            out[name] = raw.view(dt).reshape(shape)
        except RuntimeError:  # offset not aligned to the element size: copy this one
            out[name] = raw.clone().view(dt).reshape(shape)
    return out


# ---- the rank's model ----------------------------------------------------------------------

def _local_config(config: Any, dims: ModelDims, shard: RankShard) -> Any:
    cfg = copy.deepcopy(config)
    if dims.family == "llama":
        cfg.num_attention_heads = len(shard.q_heads)
        cfg.num_key_value_heads = len(shard.kv_heads)
        cfg.head_dim = dims.head_dim
        cfg.intermediate_size = shard.ffn_width
    return cfg


class RankModel:
    """One rank's share of the model: meta-device skeleton + loadable blocks + a `DecoderView`."""

    def __init__(self, shard_dir: str | Path, rank: int, plan: ShardPlan, dtype: torch.dtype, reducer: Reducer) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        self.root = Path(shard_dir)
        self.rank = rank
        self.plan = plan
        self.shard = plan.shards[rank]
        self.dims = plan.dims
        self.dtype = dtype
        self.reducer = reducer
        config = AutoConfig.from_pretrained(str(self.root))
        config._attn_implementation = "sdpa"
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(dtype)
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.view = DecoderView(model)
        self.config = config
        self._swap_layers()
        if self.dims.family == "llama":
            rot = type(model.model.rotary_emb)(config=config)
            common = load_block_file(self.root / f"rank{rank}" / "common.safetensors")
            for n, b in rot.named_buffers():
                key = f"rotary_emb.{n}"
                if key in common:
                    setattr(rot, n, common[key])
            model.model.rotary_emb = rot
            self.view.rotary_emb = rot
        if self.shard.is_master:
            self.load_master()

    def _swap_layers(self) -> None:
        from transformers.pytorch_utils import Conv1D

        dims, shard, red = self.dims, self.shard, self.reducer
        hd, H = dims.head_dim, dims.hidden_size
        for l, layer in enumerate(self.view.layers):
            with torch.device("meta"):
                if dims.family == "llama":
                    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP

                    cfg = _local_config(self.config, dims, shard)
                    att = LlamaAttention(cfg, l)
                    att.o_proj = RowParallelLinear(len(shard.q_heads) * hd, H, att.o_proj.bias is not None, red)
                    mlp = LlamaMLP(cfg)
                    mlp.down_proj = RowParallelLinear(shard.ffn_width, H, mlp.down_proj.bias is not None, red)
                    layer.self_attn, layer.mlp = att.to(self.dtype), mlp.to(self.dtype)
                else:
                    att = layer.attn
                    width = len(shard.q_heads) * hd
                    att.num_heads = len(shard.q_heads)
                    att.split_size = width
                    att.c_attn = Conv1D(3 * width, H)
                    att.c_proj = RowParallelConv1D(H, width, red)
                    layer.mlp.c_fc = Conv1D(shard.ffn_width, H)
                    layer.mlp.c_proj = RowParallelConv1D(H, shard.ffn_width, red)
                    layer.to(self.dtype)

    # -- weights --------------------------------------------------------------------------
    def block_modules(self, block: str) -> nn.Module:
        """The layer module a block's keys are relative to."""
        return self.view.layers[int(block[5:8])]

    def assign_block(self, block: str, state: dict[str, torch.Tensor]) -> None:
        """Make ``state`` (from `load_block_file`) the live weights of ``block`` (no copy)."""
        layer = self.block_modules(block)
        for key, t in state.items():
            mod_path, _, pname = key.rpartition(".")
            mod = layer.get_submodule(mod_path)
            setattr(mod, pname, nn.Parameter(t, requires_grad=False))

    def release_block(self, block: str, state_keys: list[str]) -> None:
        """Drop ``block``'s weights (back to meta tensors) so their memory can be freed."""
        layer = self.block_modules(block)
        for key in state_keys:
            mod_path, _, pname = key.rpartition(".")
            mod = layer.get_submodule(mod_path)
            old = getattr(mod, pname)
            setattr(mod, pname, nn.Parameter(torch.empty(old.shape, dtype=old.dtype, device="meta"), requires_grad=False))

    def block_file(self, block: str) -> Path:
        return block_path(self.root, self.rank, block)

    def load_all(self) -> int:
        """Load every block (all weights resident); returns bytes loaded."""
        n = 0
        for b in block_names(self.dims.num_layers):
            st = load_block_file(self.block_file(b))
            n += sum(t.numel() * t.element_size() for t in st.values())
            self.assign_block(b, st)
        return n

    def load_master(self) -> None:
        state = load_block_file(self.root / f"rank{self.rank}" / "master.safetensors")
        for key, t in state.items():
            mod_path, _, pname = key.rpartition(".")
            setattr(self.model.get_submodule(mod_path), pname, nn.Parameter(t, requires_grad=False))
        if getattr(self.config, "tie_word_embeddings", False):
            self.view.lm_head.weight = self.view.embed_tokens.weight
        self.view.lm_head = self.model.lm_head
