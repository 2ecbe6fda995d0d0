"""Over-the-air computation (AirComp) all-reduce for tensor-parallel inference over a wireless uplink.

Owns: the per-device multi-antenna channels to the aggregator (`channel`), the fast-timescale
transceiver design — closed form for one antenna, SDR with Gaussian randomisation for several,
and baselines (`design`), what the devices send and how the aggregator estimates the sum
(`signal`), the torch.distributed all-reduce registered as ``"aircomp"`` (`allreduce`), air time
against the digital star over TDMA/FDMA (`airtime`), and the slow-timescale model assignment
(`assign`). Follows Zhang, He, Song, Zhang, Letaief, "Communication-efficient distributed
on-device LLM inference over wireless networks"; the README says what differs from the paper.
"""
from splitrl.aircomp.airtime import AirTime, aircomp_seconds, digital_star_seconds, post_mrc_snr_db
from splitrl.aircomp.allreduce import AirCompAllReduce
from splitrl.aircomp.channel import AirCompChannel, AirCompChannelConfig
from splitrl.aircomp.design import DESIGNS, Transceiver, design, zf_transceiver
from splitrl.aircomp.signal import pack_complex, simulate_allreduce, token_scales, unpack_complex

__all__ = [
    "AirCompAllReduce", "AirCompChannel", "AirCompChannelConfig", "AirTime", "DESIGNS", "Transceiver",
    "aircomp_seconds", "design", "digital_star_seconds", "pack_complex", "post_mrc_snr_db",
    "simulate_allreduce", "token_scales", "unpack_complex", "zf_transceiver",
]
