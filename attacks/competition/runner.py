"""Running one piece of work: a submission's entry point, natively or in Docker, within a
time limit.

The calling convention is the dev toolkit's: an attack runs `./ENTRY INPUT_DIR
OUTPUT_DIR EPSILON`, a defense `./ENTRY INPUT_DIR OUTPUT_FILE`, with the submission
folder as working directory. In Docker (`docker run`, the toolkit's command lines)
the folders are mounted at /input_images, /output_images (attacks) or /output_data
(defenses, which write /output_data/result.csv) and the submission at /code. The
native runtime runs the entry point directly and maps those container paths to the
host folders they stand for, so an entry point that takes its paths as arguments
(as the toolkit's samples and this project's submissions do) runs unchanged; one
that hard-codes /code or /input_images needs the docker runtime.

A piece runs in its own session and process group. At the time limit the group gets
SIGTERM (in Docker, `docker stop` first), and SIGKILL after the grace period; when
the entry point ends, whatever it left running is killed, however it detached, as a
container's end would (`containment`).
Its stdout and stderr go to files in the piece's folder.

The docker runtime mounts the inputs (the images and the submission's folder)
read-only and the output folder writable, runs without a network, and applies the
memory and CPU limits given (the cloud evaluation's `-m` and `--cpus`).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attacks.competition import containment
from attacks.competition.submissions import Submission

NATIVE, DOCKER = "native", "docker"
RUNTIMES = (NATIVE, DOCKER)
INPUT_IMAGES, OUTPUT_IMAGES, OUTPUT_DATA, CODE = (
    "/input_images",
    "/output_images",
    "/output_data",
    "/code",
)
OK, FAILED, TIMEOUT = "ok", "failed", "timeout"
STDOUT_LOG, STDERR_LOG = "stdout.log", "stderr.log"
TAIL_LINES, TAIL_BYTES = 10, 4096
_POLL_START, _POLL_MAX = 0.01, 0.25


@dataclass(frozen=True)
class Invocation:
    """A command to run in `cwd`; `stop_command` stops what it started (a container)."""

    command: tuple[str, ...]
    cwd: Path
    stop_command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Runtime:
    """How entry points are run: `native` or `docker` (with `gpu`: the submission's
    `container_gpu` and `--gpus all`, or `--gpus "device=..."` of `devices`, the GPUs a
    cluster gave the piece's task); `grace_period` is what `docker stop` is given,
    `memory` and `cpus` are the container's `-m` and `--cpus` (None: no limit)."""

    kind: str = NATIVE
    gpu: bool = False
    grace_period: float = 10.0
    memory: str | None = None
    cpus: float | None = None
    devices: tuple[str, ...] | None = None

    def gpus(self) -> tuple[str, ...]:
        """`docker run`'s GPU option: none, every GPU, or the piece's `devices`."""
        if not self.gpu:
            return ()
        if self.devices:
            return ("--gpus", f'"device={",".join(self.devices)}"')
        return ("--gpus", "all")

    def image(self, submission: Submission) -> str | None:
        """The container image the submission runs in (None natively)."""
        return submission.image(self.gpu) if self.kind == DOCKER else None

    def attack(
        self, submission: Submission, input_dir: Path, output_dir: Path, epsilon: int
    ) -> Invocation:
        """`ENTRY INPUT_DIR OUTPUT_DIR EPSILON`."""
        mounts = {INPUT_IMAGES: input_dir, OUTPUT_IMAGES: output_dir}
        arguments = (INPUT_IMAGES, OUTPUT_IMAGES, str(epsilon))
        return self._invocation(submission, mounts, arguments, writable=OUTPUT_IMAGES)

    def defense(self, submission: Submission, input_dir: Path, output_file: Path) -> Invocation:
        """`ENTRY INPUT_DIR OUTPUT_FILE`; the output file's folder is mounted at /output_data."""
        mounts = {INPUT_IMAGES: input_dir, OUTPUT_DATA: output_file.parent}
        arguments = (INPUT_IMAGES, f"{OUTPUT_DATA}/{output_file.name}")
        return self._invocation(submission, mounts, arguments, writable=OUTPUT_DATA)

    def _invocation(
        self,
        submission: Submission,
        mounts: Mapping[str, Path],
        arguments: tuple[str, ...],
        *,
        writable: str,
    ) -> Invocation:
        cwd = submission.directory
        if self.kind == NATIVE:
            return Invocation(
                (str(cwd / submission.entry_point), *(_to_host(a, mounts) for a in arguments)),
                cwd,
            )
        name = f"run-competition-{secrets.token_hex(6)}"
        volumes = [
            item
            for target, host in (*mounts.items(), (CODE, cwd))
            for item in (
                "-v",
                f"{Path(host).absolute()}:{target}{'' if target == writable else ':ro'}",
            )
        ]
        limits = (
            *(("--memory", self.memory) if self.memory else ()),
            *(("--cpus", f"{self.cpus:g}") if self.cpus else ()),
        )
        image = self.image(submission)
        assert image is not None, "discovery requires a container for the docker runtime"
        command = (
            "docker",
            "run",
            "--rm",
            "--name",
            name,
            "--network",
            "none",
            *limits,
            *self.gpus(),
            *volumes,
            "-w",
            CODE,
            image,
            f"./{submission.entry_point}",
            *arguments,
        )
        stop = ("docker", "stop", "--time", str(math.ceil(self.grace_period)), name)
        return Invocation(command, cwd, stop)


def _to_host(argument: str, mounts: Mapping[str, Path]) -> str:
    """A container path as the host path it is mounted from (other arguments unchanged)."""
    for target, host in mounts.items():
        if argument == target or argument.startswith(f"{target}/"):
            return str(Path(host).absolute()) + argument[len(target) :]
    return argument


@dataclass(frozen=True)
class Outcome:
    """How a piece's process ended: `status` ok, failed or timeout, and why."""

    status: str
    seconds: float
    returncode: int | None
    reason: str | None = None
    stderr_tail: str = ""

    def describe(self) -> str:
        """The reason, with the last line the submission printed on stderr."""
        last = self.stderr_tail.strip().splitlines()[-1:] if self.stderr_tail.strip() else []
        return "; ".join([self.reason or self.status, *(f"stderr ends: {line}" for line in last)])

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "seconds": self.seconds,
            "returncode": self.returncode,
            "reason": self.reason,
            "stderr_tail": self.stderr_tail,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            status=data["status"],
            seconds=data["seconds"],
            returncode=data["returncode"],
            reason=data["reason"],
            stderr_tail=data["stderr_tail"],
        )


def _exited(pid: int) -> bool:
    """Whether the child `pid` has ended, leaving it unreaped (its process group stays ours)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait(pid: int, deadline: float | None) -> bool:
    """Wait for the child to end until `deadline` (monotonic; None: for ever); whether it did."""
    delay = _POLL_START
    while not _exited(pid):
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        time.sleep(delay if deadline is None else min(delay, deadline - now))
        delay = min(2 * delay, _POLL_MAX)
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _stop(pid: int, invocation: Invocation, grace_period: float) -> bool:
    """Stop the piece: its stop command if any, SIGTERM to its group, then SIGKILL after
    `grace_period` seconds; whether SIGKILL was needed."""
    if invocation.stop_command:
        # Should it fail, the signals below still stop the client.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                invocation.stop_command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=grace_period + 60,
                check=False,
            )
    _signal_group(pid, signal.SIGTERM)
    if _wait(pid, time.monotonic() + grace_period):
        return False
    _signal_group(pid, signal.SIGKILL)
    return True


def _tail(path: Path) -> str:
    """The last lines a submission wrote to `path` (nothing where the piece replaced
    the log with something that is not a regular file)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return ""
    with open(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return ""
        handle.seek(max(0, info.st_size - TAIL_BYTES))
        text = handle.read(TAIL_BYTES).decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-TAIL_LINES:])


def _ending(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def run(
    invocation: Invocation,
    *,
    time_limit: float | None,
    grace_period: float,
    log_dir: Path,
    ledger_dir: Path,
) -> Outcome:
    """Run `invocation` to its end or to `time_limit` seconds (None: no limit), logging its
    output in `log_dir`; every process it started is ended with it (`containment`), and
    while it runs the ledger in `ledger_dir` names it. An interruption
    (KeyboardInterrupt) stops it before going on."""
    start = time.monotonic()
    token = containment.new_token()
    spared = containment.children()
    with (
        open(log_dir / STDOUT_LOG, "wb") as stdout,
        open(log_dir / STDERR_LOG, "wb") as stderr,
        containment.ledger(ledger_dir, token),
    ):
        try:
            process = subprocess.Popen(
                invocation.command,
                cwd=invocation.cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                env={**os.environ, containment.TOKEN_VARIABLE: token},
                preexec_fn=containment.die_with_parent,
            )
        except OSError as error:
            reason = f"cannot start {invocation.command[0]}: {error.strerror or error}"
            return Outcome(FAILED, 0.0, None, reason)
        timed_out = killed = False
        try:
            if not _wait(process.pid, None if time_limit is None else start + time_limit):
                timed_out = True
                killed = _stop(process.pid, invocation, grace_period)
        except BaseException:
            _stop(process.pid, invocation, grace_period)
            raise
        finally:
            _signal_group(process.pid, signal.SIGKILL)  # what it left behind, as a container's end
            process.wait()
            containment.sweep(token, roots={process.pid}, spared=spared)
    seconds = time.monotonic() - start
    tail = _tail(log_dir / STDERR_LOG)
    if timed_out:
        how = f"SIGKILL after a {grace_period:g} s grace period" if killed else "SIGTERM"
        reason = f"stopped at the {time_limit:g} s time limit ({how})"
        return Outcome(TIMEOUT, seconds, process.returncode, reason, tail)
    if process.returncode != 0:
        return Outcome(FAILED, seconds, process.returncode, _ending(process.returncode), tail)
    return Outcome(OK, seconds, 0, None, tail)
