"""Stand-ins for what cannot be had here, for tests, benchmarks and the GPU job:
deterministic slim weights (`weights`), slim checkpoints of them (`checkpoints`) and a
small CNN trained on scikit-learn's digits (`digits`). Nothing of the defense imports
this package."""

from defense.testing.checkpoints import write_checkpoint, write_generated_checkpoint

__all__ = ["write_checkpoint", "write_generated_checkpoint"]
