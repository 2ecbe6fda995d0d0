"""Generation backends: what the serving code calls to run one request through a split.

`GenerationBackend` is the protocol (a backend may also offer ``prepare(split)``, returning what
``generate`` takes in place of the split — `LocalBackend` returns the cached `Partition`):
`LocalBackend` runs the whole partitioned model in this
process (`splitrl.runtime.SplitRuntime`, the link emulated in-process); the remote UE client
(`splitrl.deploy.client.UEClient`) runs layers ``[0, s)`` here and the rest on an edge server
over gRPC, and reports ``edge_available`` False after a fallback until the edge's health check
passes again.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch

from splitrl.link import link_at
from splitrl.models.view import DecoderView
from splitrl.runtime.engine import GenerationResult
from splitrl.runtime.partition import Partition
from splitrl.runtime.sampling import SamplingConfig

__all__ = ["GenerationBackend", "LocalBackend"]


@runtime_checkable
class GenerationBackend(Protocol):
    """Runs one generation request through split ``split`` (layers ``[0, split)`` on the UE)."""

    tokenizer: Any
    view: DecoderView
    model_name: str

    @property
    def edge_available(self) -> bool:
        """False after a fallback until the edge's health check passes."""
        ...

    def generate(self, prompt_ids: torch.Tensor, split: int, *, link: str, snr_db: float, seed: int,
                 sampling: SamplingConfig, max_new_tokens: int, stop_at_eos: bool = True,
                 on_token: Callable[[int], None] | None = None) -> GenerationResult:
        """Generate from ``prompt_ids`` ``[1, T]``; the link ``link`` (a `splitrl.link.LINK_NAMES`
        name) at ``snr_db`` with noise seed ``seed`` at the cut; ``report.fallback_segments``
        lists segments finished locally after a fallback."""
        ...


class LocalBackend:
    """Everything in this process: the `SplitRuntime` with the link emulated at each cut."""

    def __init__(self, runtime, *, model_name: str = "", modulation: str = "qpsk") -> None:
        self.runtime = runtime
        self.view: DecoderView = runtime.view
        self.tokenizer = runtime.tokenizer
        self.model_name = model_name
        self.modulation = modulation
        self._partitions: dict[int, Partition] = {}

    def prepare(self, split: int) -> Partition:
        """The validated `Partition` of ``split``, built once per split (the serving loop's
        decision latency ends here: the partition is in place for the next request)."""
        p = self._partitions.get(split)
        if p is None:
            p = self._partitions[split] = self.runtime.partition(int(split))
        return p

    @property
    def edge_available(self) -> bool:
        return True  # the "edge" is this process

    def generate(self, prompt_ids: torch.Tensor, split: int | Partition, *, link: str, snr_db: float, seed: int,
                 sampling: SamplingConfig, max_new_tokens: int, stop_at_eos: bool = True,
                 on_token: Callable[[int], None] | None = None) -> GenerationResult:
        links = link_at(link, seed=seed, snr_db=snr_db, modulation=self.modulation, vocab_size=self.view.vocab_size)
        placed = split if isinstance(split, Partition) else self.prepare(int(split))
        return self.runtime.generate(prompt_ids, placed, max_new_tokens=max_new_tokens, sampling=sampling,
                                     links=links, stop_at_eos=stop_at_eos, on_token=on_token)
