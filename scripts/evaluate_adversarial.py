"""`evaluate_adversarial` from a checkout; the program is attacks/cli/evaluate_adversarial.py."""

from attacks.cli.evaluate_adversarial import run

if __name__ == "__main__":
    run()
