"""The split controller, without a gym env, over the decision core (`splitrl.decision`: request
costs and rewards, the channel process): split policies (`policy`), generation backends
(`backend`), serving one request (`serving`), the decision-log sinks (`sinks`), scenarios
(`scenario`) and an in-process session serving a prompt list (`session`, ``splitrl control``). `splitrl serve` (the
OpenAI-compatible endpoint) serves through the same pieces."""
