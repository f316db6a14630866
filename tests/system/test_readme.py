"""The README's commands: CI runs its test command, and the scripts it names exist."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    test_command = quick_start.strip().splitlines()[1]
    assert test_command.startswith(".venv/bin/python -m pytest tests")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == test_command


def test_every_script_the_readme_names_exists():
    named = set(re.findall(r"\b((?:scripts|submissions)/[\w/]+\.(?:py|sh))", README))
    # run_attack.sh lives in each submission; config.sh and svc.sh are the GitHub runner's.
    named |= set(re.findall(r"`(\w+\.sh)\b", README)) - {"run_attack.sh", "config.sh", "svc.sh"}
    assert len(named) >= 6
    for path in sorted(named):
        assert (REPO / path).is_file(), path
