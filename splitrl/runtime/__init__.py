"""Partitioned inference runtime: segments (UE, hops, edge) with their own KV caches, links between them."""
from splitrl.runtime.engine import GenerationResult, RequestReport, SplitRuntime
from splitrl.link.base import Link, LosslessLink, Transfer, token_id_bytes
from splitrl.runtime.executor import (
    Executor, ExecutorError, LocalExecutor, PeerUnavailable, SessionSpec, StepStats,
)
from splitrl.runtime.partition import InvalidPartitionError, Partition, SegmentSpec
from splitrl.runtime.sampling import SamplingConfig, TokenSampler
from splitrl.runtime.segment import Segment

__all__ = [
    "GenerationResult", "RequestReport", "SplitRuntime", "LosslessLink", "Link", "Transfer", "token_id_bytes",
    "InvalidPartitionError", "Partition", "SegmentSpec", "SamplingConfig", "TokenSampler", "Segment",
    "Executor", "ExecutorError", "LocalExecutor", "PeerUnavailable", "SessionSpec", "StepStats",
]
