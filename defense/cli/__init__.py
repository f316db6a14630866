"""The defense's commands: `run_defense`, `download_checkpoints`, `inspect_checkpoint`.

Each is a module with absl flags, `main(argv)` and `run()`, its console entry point;
what commands share lives in `defense.common.cli`.
"""
