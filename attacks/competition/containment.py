"""Keeping a piece's processes inside the piece: whatever an entry point starts ends
with it, however it detaches, and a harness that was killed leaves nothing running
once it is started again.

- The entry point gets SIGKILL when the harness dies (parent-death signal).
- The harness is a child subreaper, so descendants that detach (double fork,
  `setsid`) become its children instead of init's, and are found.
- After each piece, a sweep of /proc kills every process descending from the piece,
  every child the harness adopted during it, and every process whose environment
  carries the piece's token (`RUN_COMPETITION_PIECE`), until none is left.
- The tokens of the pieces in flight are kept in the ledger (`.running/` in the
  intermediate directory: one entry `<host>.<token>` per piece, so that pieces run
  side by side, on one machine or several, each have theirs), so that a harness
  started again ends what an earlier one, killed with SIGKILL, left running (on
  every node: each ends the entries of its own host).

What this cannot contain: a process that clears its environment and detaches while
the harness is being killed with SIGKILL (no subreaper is left to adopt it). A PID
namespace would, but it makes the entry point the namespace's init, which ignores
SIGTERM, and the native runtime keeps the toolkit's signals; the docker runtime,
whose containers end with all their processes, is the one for untrusted code.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from absl import logging

from attacks.competition.layout import remove
from defense.common.files import write_text_atomic

TOKEN_VARIABLE = "RUN_COMPETITION_PIECE"
LEDGER = ".running"
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36
_SWEEP_ROUNDS = 50
_TOKEN = re.compile(r"[0-9a-f]{32}")


def _prctl(option: int, value: int) -> bool:
    """prctl(2); whether it worked (False off Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; whether it could."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> None:
    """In a child before exec: receive SIGKILL when the harness ends."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def new_token() -> str:
    """A fresh token that marks one piece's processes."""
    return secrets.token_hex(16)


def _processes() -> Iterator[tuple[int, int]]:
    """(pid, parent pid) of every process that can be seen."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields and fields[0] not in (b"Z", b"X"):
            yield int(entry), int(fields[1])


def _carries(pid: int, token: str) -> bool:
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{TOKEN_VARIABLE}={token}".encode() in environment.split(b"\0")


def children() -> set[int]:
    """The harness's children now: what a sweep leaves alone (taken before a piece starts)."""
    me = os.getpid()
    return {pid for pid, parent in _processes() if parent == me}


def _members(token: str, roots: Collection[int], spared: Collection[int]) -> set[int]:
    """The processes that belong to the piece: `roots` and their descendants, the
    harness's children but `spared` (so its adopted orphans), and carriers of `token`."""
    table = dict(_processes())
    me = os.getpid()
    members = {pid for pid, parent in table.items() if parent == me and pid not in spared}
    members |= {pid for pid in table if pid in roots}
    members |= {pid for pid in table if pid != me and _carries(pid, token)}
    grew = True
    while grew:
        more = {pid for pid, parent in table.items() if parent in members} - members
        members |= more
        grew = bool(more)
    members.discard(me)
    return members


def _reap() -> None:
    """Collect adopted orphans that ended (never a child the caller still waits for:
    the sweep runs after the piece's own process was waited for)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def sweep(token: str, *, roots: Collection[int] = (), spared: Collection[int] = ()) -> int:
    """Kill every process of the piece marked by `token` (see `_members`) until none is
    left; how many were killed."""
    killed: set[int] = set()
    for _ in range(_SWEEP_ROUNDS):
        members = _members(token, roots, spared)
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed |= members
        time.sleep(0.01)
        _reap()
    _reap()
    return len(killed)


def _entry(root: Path, token: str) -> Path:
    return root / LEDGER / f"{socket.gethostname()}.{token}"


@contextlib.contextmanager
def ledger(root: Path, token: str) -> Iterator[None]:
    """Note in `root`'s ledger that the piece marked by `token` is in flight on this
    host, for as long as it is."""
    entry = _entry(root, token)
    if not entry.parent.is_dir() or entry.parent.is_symlink():
        remove(entry.parent)
        entry.parent.mkdir(exist_ok=True)
    write_text_atomic(entry, token + "\n")
    try:
        yield
    finally:
        entry.unlink(missing_ok=True)


def end_leftovers(root: Path) -> int:
    """End what a harness that was killed left running of its pieces in flight on this
    host; how many processes were ended."""
    folder = root / LEDGER
    if not folder.is_dir() or folder.is_symlink():
        remove(folder)
        return 0
    host = socket.gethostname()
    count = 0
    for entry in os.listdir(folder):
        owner, _, token = entry.rpartition(".")
        if owner != host:
            continue
        if _TOKEN.fullmatch(token):
            count += sweep(token, spared=children())
        (folder / entry).unlink(missing_ok=True)
    if count:
        logging.warning("ended %d process(es) that an earlier run left running", count)
    return count
