"""`inspect_checkpoint PATH`: list a slim checkpoint's variables, say which model it fits.

Exit status: 0 when the checkpoint is readable and fits a registry entry,
1 when it is readable but fits none (the differences from the closest entry are
listed), 2 when it is not a readable, complete checkpoint.
"""

from __future__ import annotations

import math

from absl import flags

from defense.common import cli

FLAGS = flags.FLAGS
flags.DEFINE_boolean("list_variables", True, "Print every variable with its shape and dtype.")
flags.DEFINE_boolean("verify_data", True, "Read every tensor, to catch truncated data files.")

PROGRAM = "inspect_checkpoint"


def main(argv: list[str]) -> int:
    """Inspect the checkpoint named by the one argument; return the exit status."""
    if len(argv) != 2:
        return cli.fail(PROGRAM, "usage: inspect_checkpoint CHECKPOINT_PATH")
    cli.import_tensorflow()
    from defense.models.checkpoint import (
        CheckpointError,
        is_bookkeeping,
        open_checkpoint,
        read_tensor,
    )
    from defense.models.identify import identify

    path = argv[1]
    try:
        reader = open_checkpoint(path)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
        if FLAGS.verify_data:
            for name in sorted(shapes):
                read_tensor(reader, name, path)
    except CheckpointError as error:
        return cli.fail(PROGRAM, str(error))

    model_variables = {
        name: tuple(shape) for name, shape in shapes.items() if not is_bookkeeping(name)
    }
    if FLAGS.list_variables:
        for name in sorted(shapes):
            note = "  (training bookkeeping, ignored)" if is_bookkeeping(name) else ""
            print(f"{name}\t{list(shapes[name])}\t{dtypes[name].name}{note}")
    parameters = sum(math.prod(shape) for shape in model_variables.values())
    print(f"{len(model_variables)} model variables, {parameters:,} parameters", end="")
    print(f", {len(shapes) - len(model_variables)} bookkeeping entries")

    found = identify(model_variables)
    if found.matches:
        print(
            f"fits registry model(s): {', '.join(found.matches)} (same architecture; "
            "the weights decide which)"
        )
        return cli.EXIT_OK
    print(f"fits no registry model; closest: {', '.join(found.closest)}")
    print(found.diff.describe())
    return cli.EXIT_PARTIAL


def run() -> None:
    """Console entry point `inspect_checkpoint`."""
    cli.run_program(main, __name__, PROGRAM)
