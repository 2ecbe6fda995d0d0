"""torch.distributed process groups for the multi-process runtimes (pipeline stages, tensor-parallel workers).

Owns: parsing and checking rendezvous addresses (loopback unless the network is explicitly
trusted: gloo has no authentication), the TCP store the ranks meet on, and (re)forming a
process group on that store — a new *generation* (store prefix) re-forms a group over the
surviving ranks after a failure without restarting anyone. Nothing here pickles: callers move
tensors with ``isend``/``irecv``/collectives only.
"""
from splitrl.dist.collective import ALLREDUCE_KINDS, AllReduce, CollectiveStats, make_allreduce, register_allreduce
from splitrl.dist.group import (
    DEFAULT_TIMEOUT_S, Endpoint, GroupHandle, backend_for, check_trusted, connect_store, form_group, leave_group,
)

__all__ = [
    "ALLREDUCE_KINDS", "AllReduce", "CollectiveStats", "make_allreduce", "register_allreduce",
    "DEFAULT_TIMEOUT_S", "Endpoint", "GroupHandle", "backend_for", "check_trusted", "connect_store", "form_group",
    "leave_group",
]
