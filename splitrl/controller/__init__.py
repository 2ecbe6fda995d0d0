"""The split controller, without a gym env: per-request costs and rewards (`costs`), the channel
process (`channel`), split policies (`policy`), generation backends (`backend`), serving one
request (`serving`) and the decision-log sinks (`sinks`). Used by `splitrl control` (in-process
experiments) and `splitrl serve` (the OpenAI-compatible endpoint)."""
