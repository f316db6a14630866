"""The command-line programs, and what they share: exit codes, messages, the checkpoint
directory rule and a quiet TensorFlow start.

Each command is a module here (or in `attacks.cli`) with absl flags, `main(argv)`
and `run()`, its console entry point; `scripts/*.py` call the same `run()`. Defining
the flags imports no TensorFlow, so `--help` is fast; `main` imports it through
`import_tensorflow()` once the flags are parsed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from defense.common.errors import ParameterError

if TYPE_CHECKING:
    from defense.models import ModelSpec

EXIT_OK, EXIT_PARTIAL, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130
T = TypeVar("T")
CHECKPOINT_DIR_ENV = "DEFENSE_CHECKPOINT_DIR"
DEFAULT_CHECKPOINT_DIR = "checkpoints"
CONTAINER_ENV = "DEFENSE_CONTAINER"
CHECKPOINT_PATH_HELP = (
    "Slim checkpoint prefix; default <checkpoint dir>/<model's file>, where the checkpoint "
    f"dir is ${CHECKPOINT_DIR_ENV}, else ./{DEFAULT_CHECKPOINT_DIR}."
)
# TensorFlow's start-up lines on a machine without CUDA, with a CPU TensorFlow was not
# built for, or with oneDNN's custom operations on (x86 CPUs with AVX-512): printed by
# its C++ logging before any log level applies, so `import_tensorflow` applies it.
TENSORFLOW_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "failed call to cuInit",
)

NO_TEMPORARY_FOLDER = (
    "no writable temporary folder ($TMPDIR, /tmp, /var/tmp, /usr/tmp and the working "
    "directory are all read-only or missing): set TMPDIR to a writable folder, or with "
    "`docker run --read-only` add `--tmpfs /tmp`"
)


def in_flags(problem: str | Exception, flag_names: Mapping[str, str] | None = None) -> str:
    """A problem as a command says it: a `ParameterError`'s parameters as its flags
    (`--name`, or `--flag_names[name]` where the flag is spelled differently)."""
    if isinstance(problem, ParameterError):
        names = flag_names or {}
        return problem.spelled(lambda name: f"--{names.get(name, name)}")
    return str(problem)


def fail(
    program: str, problem: str | Exception, *, flag_names: Mapping[str, str] | None = None
) -> int:
    """Print a one-paragraph error on stderr (in flags, `in_flags`); return the fatal exit code."""
    print(f"{program}: error: {in_flags(problem, flag_names)}", file=sys.stderr)
    return EXIT_FATAL


def run_program(main: Callable[[list[str]], int], module: str, program: str) -> None:
    """Run an absl program whose flags `module` defines.

    `--help` lists those flags however the program was started (console command or
    script) and exits 0; a flag error is one message and exit 2, like any bad input.
    SIGTERM stops the program as Ctrl-C does, so that half-written temporary files
    are removed and what was finished is kept; a stop that `main` does not report
    itself (while TensorFlow is imported or a model loads) is one line and exit 130.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = _redeliver_interrupt(sys.unraisablehook)
    try:
        _run_absl(main, module, program)
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def _run_absl(main: Callable[[list[str]], int], module: str, program: str) -> None:
    """`app.run(main)` with `module`'s flags listed by `--help` and flag errors as exit 2."""
    from absl import app, flags

    sys.modules["__main__"].__doc__ = sys.modules[module].__doc__
    for flag in flags.FLAGS.get_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(fail(program, f"{error} (see --help)"))
        except SystemExit as stop:  # absl's help flags exit 1 once they have printed
            sys.exit(EXIT_OK if stop.code == 1 else stop.code)

    try:
        tempfile.gettempdir()
    except FileNotFoundError:
        sys.exit(fail(program, NO_TEMPORARY_FOLDER))
    app.run(main, flags_parser=parse)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _redeliver_interrupt(
    previous: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], None]:
    """An unraisable-exception hook that sends an interruption again when it landed in a
    finalizer (`__del__`, a weakref callback), where Python ignores any exception: the
    signal then stops the program a moment later instead of being lost. (Sent from a
    timer thread: sent here, the handler would run at once, still inside the hook.)"""

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and unraisable.exc_value.args:
            name = unraisable.exc_value.args[0]
            if name in signal.Signals.__members__:
                again = threading.Timer(0.01, os.kill, (os.getpid(), signal.Signals[name]))
                again.daemon = True
                again.start()
                return
        previous(unraisable)

    return hook


def run_writing(program: str, output: object, work: Callable[[], T]) -> T | int:
    """Run `work`, which writes `output` as it goes; a full disk, an unwritable file or
    an interruption becomes one message (exit 2, or 130 when interrupted), and what
    was finished before stays in `output`."""
    from defense.common.errors import InputError

    try:
        return work()
    except KeyboardInterrupt:
        print(f"{program}: interrupted; what was finished is kept in {output}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, InputError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        return fail(program, f"cannot write {output}: {reason}; what was finished is kept")


def checkpoint_dir() -> Path:
    """Where checkpoints live when no path is given: `$DEFENSE_CHECKPOINT_DIR`, else
    `./checkpoints` in the working directory (the container sets the variable)."""
    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or DEFAULT_CHECKPOINT_DIR)


def default_checkpoint(checkpoint_file: str) -> Path:
    """Where a registry model's checkpoint lives when no path is given."""
    return checkpoint_dir() / checkpoint_file


def checkpoint_hint(checkpoint_file: str) -> str:
    """How to provide a missing default checkpoint: in the container, the mount to add."""
    folder = checkpoint_dir()
    if os.environ.get(CONTAINER_ENV):
        return (
            f"The image looks for {checkpoint_file} in checkpoints/ beside the entry point "
            "(under the NIPS 2017 toolkit's call: the submission folder's checkpoints/, "
            f"/code/checkpoints), then in {folder}: put it in the submission's checkpoints/, "
            f"or mount a folder holding it, e.g. docker run -v /path/to/checkpoints:{folder}:ro ..."
        )
    return (
        f"Checkpoints are looked up in ${CHECKPOINT_DIR_ENV}, else ./checkpoints (here: "
        f"{folder.absolute()}), where `download_checkpoints` installs them; or pass "
        "--checkpoint_path."
    )


def fail_checkpoint(program: str, error: Exception, spec: ModelSpec, *, default: bool) -> int:
    """A checkpoint that did not load; for the default location, also how to provide one."""
    hint = f"\n{checkpoint_hint(spec.checkpoint_file)}" if default else ""
    return fail(program, f"{error}{hint}")


def output_hint() -> str:
    """In the container, why an output folder may not be writable and what to do."""
    if not os.environ.get(CONTAINER_ENV):
        return ""
    return (
        f" (the container runs as uid {os.getuid()}: mount a folder that user may write, "
        'or add --user "$(id -u):$(id -g)" to docker run, or see IMAGE --help)'
    )


def report_failures(program: str, failures: Mapping[str, str], done: str) -> int:
    """List the images that failed, with their reasons, on stderr; return the exit status."""
    if not failures:
        return EXIT_OK
    print(f"{program}: {len(failures)} image(s) could not be {done}:", file=sys.stderr)
    for name, reason in sorted(failures.items()):
        print(f"  {name}: {reason}", file=sys.stderr)
    return EXIT_PARTIAL


# A C++ log line starts with its severity letter and the date: "I0000 00:00:17...".
_LOG_LINE = re.compile(r"([IWEF])\d{4} ")
_SEVERITIES = "IWEF"


def _severity(line: str) -> int:
    """A C++ log line's severity, as `TF_CPP_MIN_LOG_LEVEL` counts (0 info .. 3 fatal);
    TensorFlow's banner and continuation lines count as info."""
    match = _LOG_LINE.match(line)
    return _SEVERITIES.index(match.group(1)) if match else 0


@contextlib.contextmanager
def _stderr_without(noise: tuple[str, ...], below: int) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file meanwhile (C++ logging writes there
    directly), then replay every line on stderr but the `noise` of severity below `below`.

    SIGINT and SIGTERM wait while stderr is put back, so that a stop is reported there.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        try:
            os.dup2(captured.fileno(), 2)
            yield
        finally:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                for line in captured.read().decode("utf-8", "replace").splitlines(True):
                    if _severity(line) >= below or not any(text in line for text in noise):
                        sys.stderr.write(line)
                sys.stderr.flush()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def import_tensorflow() -> ModuleType:
    """Import TensorFlow and list its devices with its start-up noise hidden.

    TensorFlow prints the lines in `TENSORFLOW_NOISE` before any log level applies
    (oneDNN's note twice on x86 CPUs with AVX-512). Unless the user set
    `TF_CPP_MIN_LOG_LEVEL`, C++ info and warning lines are turned off and those lines
    dropped; with a level the user set, those below it are dropped (0: nothing is
    hidden). Anything else printed meanwhile still reaches stderr. oneDNN stays on.
    """
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if level is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    below = len(_SEVERITIES) if level is None else _user_level(level)
    with _stderr_without(TENSORFLOW_NOISE, below) if below else contextlib.nullcontext():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf


def _user_level(level: str) -> int:
    """`TF_CPP_MIN_LOG_LEVEL` as TensorFlow reads it: a number, anything else 0."""
    try:
        return int(level)
    except ValueError:
        return 0
