"""Privacy of a split: how much of the prompt the activations crossing each cut give away.

`run_privacy_probe` measures top-1/top-5 token recovery of learned inversion probes per split
on held-out WikiText-2 articles; `splitrl privacy-probe` (see `splitrl.cli.privacy_probe`) runs it and
writes the JSON and plot that the split-point MDP's privacy term reads.
"""
from splitrl.privacy.probe import (
    LsqClassifierProbe,
    ProbeConfig,
    RidgeNNProbe,
    block_bootstrap_ci,
    collect_hidden,
    partition_articles,
    plot_privacy,
    run_privacy_probe,
    sample_windows,
    split_articles,
)

__all__ = ["LsqClassifierProbe", "ProbeConfig", "RidgeNNProbe", "block_bootstrap_ci", "collect_hidden",
           "partition_articles", "plot_privacy", "run_privacy_probe", "sample_windows", "split_articles"]
