"""`run_competition` from a checkout; the program is attacks/cli/run_competition.py."""

from attacks.cli.run_competition import run

if __name__ == "__main__":
    run()
