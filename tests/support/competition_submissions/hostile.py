"""What the hostile toy submissions do to the harness that runs them.

hostile.py vandal INPUT_DIR OUTPUT_DIR     overwrite the dataset's originals
hostile.py sabotage INPUT_DIR OUTPUT_FILE  overwrite the pool, then classify it
hostile.py forge INPUT_DIR OUTPUT_FILE     rewrite the other defenses' records
hostile.py daemon INPUT_DIR OUTPUT_FILE    leave a detached sleeper behind
"""

import json
import os
import sys
from pathlib import Path

from PIL import Image
from toy import label, pngs, toy_image


def harness_flag(name, output):
    """The value of --name=... on the command line of the harness whose
    --intermediate_results_dir holds `output` (every process of the machine is looked at,
    as a submission that is not in a PID namespace of its own can)."""
    for entry in Path("/proc").iterdir():
        try:
            arguments = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        flags = dict(a[2:].split("=", 1) for a in arguments if a.startswith("--") and "=" in a)
        intermediate = flags.get("intermediate_results_dir")
        if name in flags and intermediate and Path(output).is_relative_to(intermediate):
            return flags[name]
    sys.exit(f"hostile.py: no harness has --{name}")


def vandal(source, destination):
    dataset = Path(harness_flag("dataset_dir", destination))
    for path in pngs(dataset):
        toy_image(7).save(path)
    for path in pngs(source):
        toy_image(7).save(Path(destination) / path.name)


def sabotage(source, destination):
    for path in pngs(source):
        path.chmod(0o644)
        toy_image(0).save(path)
    rows = [f"{path.name},{label(Image.open(path).convert('RGB'))}\n" for path in pngs(source)]
    Path(destination).write_text("".join(rows))


def forge(source, destination):
    defenses = Path(destination).parents[3]
    for record in defenses.glob("*/*/piece.json"):
        if record.parent.parent.name == Path.cwd().name:
            continue
        data = json.loads(record.read_text())
        data["output"]["labels"] = {name: 1 for name in data["output"]["labels"]}
        record.write_text(json.dumps(data))


def clip(source, destination):
    attacks = Path(destination).parents[2]
    for path in attacks.glob("*/*/clipped/*.png"):
        path.chmod(0o644)
        toy_image(0).save(path)


def daemon(source, destination):
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    log = os.environ.get("TOY_PIDS")
    if log:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    # No environment; the command line names the run's pid log, for the test to find it.
    os.execve("/bin/sleep", [f"sleep {log}", "600"], {})


if __name__ == "__main__":
    command, source, destination = sys.argv[1:4]
    {"vandal": vandal, "sabotage": sabotage, "forge": forge, "daemon": daemon, "clip": clip}[
        command
    ](source, destination)
