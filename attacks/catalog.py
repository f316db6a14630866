"""What the attack package offers, by name, with every attack's defaults.

Importable without TensorFlow: the command-line flags are defined from it, so
`generate_adversarial --help` answers at once.
"""

from __future__ import annotations

ATTACKS = ("fgsm", "pgd", "eot_pgd", "deepfool", "cw")
# The paper's FGSM epsilons in pixel units (Tables 2-6).
PAPER_EPSILONS = (2, 5, 10)
# Every attack's hyper-parameters (its keyword arguments) and their defaults: the
# paper's FGSM epsilon, the competition's 16 for PGD and EOT, cleverhans 3.x's
# DeepFool and C&W settings. A step size of None is epsilon / 8 (2.0 at 16).
DEFAULTS: dict[str, dict[str, object]] = {
    "fgsm": {"epsilon": float(PAPER_EPSILONS[0])},
    "pgd": {"epsilon": 16.0, "step_size": None, "steps": 10, "random_start": True},
    "eot_pgd": {
        "epsilon": 16.0,
        "step_size": None,
        "steps": 10,
        "samples": 30,
        "random_start": True,
    },
    "deepfool": {"nb_candidate": 10, "overshoot": 0.02, "max_iter": 50},
    "cw": {
        "confidence": 0.0,
        "learning_rate": 5e-3,
        "binary_search_steps": 5,
        "max_iterations": 1000,
        "initial_const": 1e-2,
        "abort_early": True,
    },
}
# The defense EOT-PGD attacks unless told otherwise.
EOT_DEFAULT_CONFIG = "paper"
# The paper's attack scenarios (Sections 4.3-4.6), built by `attacks.scenarios`.
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
