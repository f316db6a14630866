"""`inspect_checkpoint` from a checkout; the program is defense/cli/inspect_checkpoint.py."""

from defense.cli.inspect_checkpoint import run

if __name__ == "__main__":
    run()
