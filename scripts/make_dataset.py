"""`make_dataset` from a checkout; the program is attacks/cli/make_dataset.py."""

from attacks.cli.make_dataset import run

if __name__ == "__main__":
    run()
