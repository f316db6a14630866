"""`generate_adversarial` from a checkout; the program is attacks/cli/generate_adversarial.py."""

from attacks.cli.generate_adversarial import run

if __name__ == "__main__":
    run()
