"""Wireless channel emulator: per-slot SNR processes, rate/BLER/BER models and transfer latency.

Submodules: `fading` (link budget, shadowing, correlated Rayleigh/Rician/Nakagami fading),
`markov` (finite-state Markov channel), `trace` (CSV replay), `rate` (Shannon and NR CQI table),
`modulation` (BER closed forms and Monte Carlo), `latency` (HARQ transfer latency), `factory`
(build all of the above from YAML-style dicts). All randomness comes from a caller-supplied
`numpy.random.Generator`.
"""
from .base import Channel, RateModel
from .factory import make_channel, make_latency_model, make_rate_model
from .fading import (
    CorrelatedFadingChannel,
    CorrelatedFadingConfig,
    FadingSamples,
    LinkBudget,
    amount_of_fading,
    doppler_hz,
    free_space_path_loss_db,
    gudmundson_correlation,
    jakes_correlation,
    log_distance_path_loss_db,
    mean_snr_db,
    thermal_noise_dbm,
)
from .latency import (
    LatencyBreakdown,
    LatencyConfig,
    LatencyModel,
    expected_retransmissions,
    residual_block_loss,
)
from .markov import (
    MarkovChannel,
    MarkovChannelConfig,
    fit_from_trace,
    quantize,
    stationary_distribution,
    transition_counts,
)
from .modulation import (
    BerEstimate,
    ber_awgn,
    ber_awgn_approx,
    ber_nakagami,
    ber_rayleigh,
    bits_per_symbol,
    demodulate,
    modulate,
    simulate_ber,
)
from .rate import (
    CQI_SNR_THRESHOLDS_DB,
    CQI_TABLE_1,
    CqiEntry,
    CqiRate,
    CqiRateConfig,
    LinkAdaptation,
    ShannonRate,
    ShannonRateConfig,
    shannon_capacity_bps,
)
from .state import ChannelState
from .trace import (
    SnrTrace,
    TraceChannel,
    TraceChannelConfig,
    TraceExhausted,
    TraceFormatError,
    load_snr_trace,
    write_snr_trace,
)

__all__ = [
    "BerEstimate", "CQI_SNR_THRESHOLDS_DB", "CQI_TABLE_1", "Channel", "ChannelState", "CqiEntry",
    "CqiRate", "CqiRateConfig", "CorrelatedFadingChannel", "CorrelatedFadingConfig",
    "FadingSamples", "LatencyBreakdown", "LatencyConfig", "LatencyModel", "LinkAdaptation",
    "LinkBudget", "MarkovChannel", "MarkovChannelConfig", "RateModel", "ShannonRate",
    "ShannonRateConfig", "SnrTrace", "TraceChannel", "TraceChannelConfig", "TraceExhausted",
    "TraceFormatError", "amount_of_fading", "ber_awgn", "ber_awgn_approx", "ber_nakagami",
    "ber_rayleigh", "bits_per_symbol", "demodulate", "doppler_hz", "expected_retransmissions",
    "fit_from_trace", "free_space_path_loss_db", "gudmundson_correlation", "jakes_correlation",
    "load_snr_trace", "log_distance_path_loss_db", "make_channel", "make_latency_model",
    "make_rate_model", "mean_snr_db", "modulate", "quantize", "residual_block_loss",
    "shannon_capacity_bps", "simulate_ber", "stationary_distribution", "thermal_noise_dbm",
    "transition_counts", "write_snr_trace",
]
