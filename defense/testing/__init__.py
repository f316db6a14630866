"""Stand-ins for what cannot be had here, for tests, benchmarks and the GPU job:
deterministic slim weights (`weights`). Nothing of the defense imports this package."""
