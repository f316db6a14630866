"""The public API: every name in `__all__` resolves, and importing the packages is light."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["defense", "attacks"])
def test_every_exported_name_resolves(package):
    module = __import__(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


def test_importing_the_packages_does_not_import_tensorflow():
    code = "import sys, defense, attacks; assert 'tensorflow' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
