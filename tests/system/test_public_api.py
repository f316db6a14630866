"""The public API: every name in `__all__` resolves, every name public before the
packages' reshaping still does, and importing the packages is light."""

import subprocess
import sys

import pytest

# What `defense`, `attacks` and their public subpackages exported before the layout of
# issue 18; each must stay importable from the same package.
PUBLIC_BEFORE = {
    "defense": "DefenseConfig NoGPUError Pattern RandomResizePad RandomizedDefense "
    "RandomizedEnsemble apply_patterns available_configs class_names classify_directory "
    "draw_patterns load_config make_generator mirrored_strategy models outputs_through "
    "outputs_through_config pattern_losses pattern_scores resize_and_pad sample_patterns",
    "attacks": "ATTACKS AdversarialSet CLIP_MAX CLIP_MIN CarliniWagnerL2 DeepFool EOTPGD FGSM "
    "FixedBudgetAttack LogitsFn MinimalPerturbationAttack PAPER_EPSILONS PGD SCENARIOS "
    "Scenario TargetModel build_scenario evaluate evaluate_batches fixed_defense_model "
    "get_attack model_to_pixels pixels_to_model read_adversarial_set target_model",
    "defense.models": "CheckpointError ModelSpec PRECISIONS REGISTRY build expected_shapes "
    "get_spec load",
    "defense.distribute": "mirrored_strategy NoGPUError",
}


@pytest.mark.parametrize("package", ["defense", "attacks"])
def test_every_exported_name_resolves(package):
    module = __import__(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
    assert len(set(module.__all__)) == len(module.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


@pytest.mark.parametrize("package", sorted(PUBLIC_BEFORE))
def test_every_name_public_before_is_still_importable(package):
    module = __import__(package, fromlist=["_"])
    names = PUBLIC_BEFORE[package].split()
    assert [name for name in names if not hasattr(module, name)] == []
    if hasattr(module, "__all__"):
        assert set(names) <= set(module.__all__)


def test_importing_the_packages_does_not_import_tensorflow():
    code = "import sys, defense, attacks; assert 'tensorflow' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
