"""Speed and memory measurements, a library that `scripts/benchmark_defense.py` runs:
`options` (what one run measures, and its flags), `machine` (what it runs on),
`defense_speed` (the defense against the entry's loop, precisions, GPUs), `memory`
(the runner's peak RSS), `attack_speed` over `speed` (batched attacks against loops),
`cost` (a model's compute cost) and `run` (one run, as the options say)."""
