"""`reproduce_paper` from a checkout; the program is attacks/cli/reproduce_paper.py."""

from attacks.cli.reproduce_paper import run

if __name__ == "__main__":
    run()
