"""`run_defense` from a checkout; the program is defense/cli/run_defense.py."""

from defense.cli.run_defense import run

if __name__ == "__main__":
    run()
