"""`download_checkpoints` from a checkout; the program is defense/cli/download_checkpoints.py."""

from defense.cli.download_checkpoints import run

if __name__ == "__main__":
    run()
