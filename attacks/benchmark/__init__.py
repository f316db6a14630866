"""Speed and memory measurements: the defense against the entry's loop, precisions, the
batched attacks against loops (`speed`) and a model's compute cost (`cost`).
`scripts/benchmark_defense.py` is their command."""
