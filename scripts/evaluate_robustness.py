"""`evaluate_robustness` from a checkout; the program is attacks/cli/evaluate_robustness.py."""

from attacks.cli.evaluate_robustness import run

if __name__ == "__main__":
    run()
