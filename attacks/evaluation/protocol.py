"""The names an evaluation is described by: the paper's epsilons and attack scenarios,
the defense config an adaptive attack defaults to, and what adversarials are judged as.
Plain constants, importable without TensorFlow (the commands' flags use them)."""

from __future__ import annotations

# The paper's FGSM epsilons in pixel units (Tables 2-6).
PAPER_EPSILONS = (2, 5, 10)
# The defense EOT-PGD attacks unless told otherwise.
EOT_DEFAULT_CONFIG = "paper"
# The paper's attack scenarios (Sections 4.3-4.6), built by `attacks.evaluation.scenarios`.
SCENARIOS = (
    "vanilla",
    "single_pattern",
    "ensemble_pattern",
    "one_pixel_padding",
    "one_pixel_resizing",
)
# What an adversarial set can be judged on.
SOURCES = {
    "float": "the float adversarials before rounding (float/<name>.npy)",
    "png": "the uint8 PNGs, rounded as the competition sees them",
}
