"""Submissions as the dev toolkit finds them: one per subfolder holding a `metadata.json`.

A submission is named after its folder (a link to a folder elsewhere is followed:
the entry point runs from the real folder, so that its own relative paths work).
Its metadata fields: `type` (`attack`,
`targeted_attack` or `defense`), `entry_point` (an executable file of the folder,
run with the folder as working directory), `container` (the Docker image; needed by
the docker runtime only) and optionally `container_gpu` (the image used with a GPU).
A folder whose metadata cannot be used is skipped, with the reason: so is one whose
name is not printable UTF-8 (it names the submission in every result file), and one
whose `metadata.json` is not a regular JSON file of at most `MAX_METADATA_BYTES`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from defense.common.errors import ParameterError
from defense.common.files import parse_json, read_text_bounded, reason

ATTACK, TARGETED_ATTACK, DEFENSE = "attack", "targeted_attack", "defense"
KINDS = (ATTACK, TARGETED_ATTACK, DEFENSE)
METADATA = "metadata.json"
MAX_METADATA_BYTES = 1 << 20


class SubmissionError(ValueError):
    """A submission folder that cannot be run; the message says why."""


@dataclass(frozen=True)
class Submission:
    """One submission: its folder, kind and how to run it."""

    name: str
    kind: str
    directory: Path
    entry_point: str
    container: str | None = None
    container_gpu: str | None = None

    @property
    def targeted(self) -> bool:
        return self.kind == TARGETED_ATTACK

    def image(self, gpu: bool) -> str | None:
        """The Docker image to run: `container_gpu` with a GPU when given, else `container`."""
        return (self.container_gpu or self.container) if gpu else self.container

    def identity(self, image: str | None) -> dict[str, str | None]:
        """What a piece's record keeps of the submission, to tell a rerun of the same one."""
        return {
            "name": self.name,
            "type": self.kind,
            "entry_point": self.entry_point,
            "image": image,
        }


def _text_field(metadata: dict, field: str, *, required: bool) -> str | None:
    value = metadata.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        got = "no such field" if field not in metadata else f"got {value!r}"
        raise SubmissionError(f"{METADATA}: {field} must be a non-empty string ({got})")
    return value


def _check_name(name: str) -> None:
    """Refuse a folder name that cannot name a submission in CSV, JSON and Markdown."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise SubmissionError(
            f"the folder name {name.encode('utf-8', 'surrogateescape')!r} is not UTF-8"
        ) from None
    if not name.isprintable():
        raise SubmissionError(f"the folder name {name!r} holds unprintable characters")


def read_submission(folder: Path, *, docker: bool) -> Submission:
    """The submission in `folder`, or a `SubmissionError` saying what is wrong with it.

    `docker`: the docker runtime will run it, so its metadata must name a container.
    """
    _check_name(folder.name)
    try:
        text = read_text_bounded(folder / METADATA, max_bytes=MAX_METADATA_BYTES)
    except (OSError, UnicodeDecodeError) as error:
        raise SubmissionError(f"cannot read {METADATA}: {reason(error)}") from error
    try:
        metadata = parse_json(text)
    except ValueError as error:
        raise SubmissionError(f"{METADATA} is not valid JSON: {error}") from error
    if not isinstance(metadata, dict):
        raise SubmissionError(f"{METADATA} must hold a JSON object, not {type(metadata).__name__}")
    kind = metadata.get("type")
    if kind not in KINDS:
        got = "no such field" if "type" not in metadata else f"got {kind!r}"
        raise SubmissionError(f"{METADATA}: type must be one of {', '.join(KINDS)} ({got})")
    entry_point = _text_field(metadata, "entry_point", required=True)
    assert entry_point is not None
    relative = PurePosixPath(entry_point)
    if relative.is_absolute() or ".." in relative.parts:
        raise SubmissionError(
            f"{METADATA}: entry_point {entry_point!r} must name a file inside the folder"
        )
    entry = folder / relative
    try:
        entry_is_file = entry.is_file()
    except OSError as error:
        raise SubmissionError(f"entry point {entry_point}: {reason(error)}") from error
    if not entry_is_file:
        raise SubmissionError(f"entry point {entry_point} is not a file of the folder")
    if not os.access(entry, os.X_OK):
        raise SubmissionError(f"entry point {entry_point} is not executable (chmod +x it)")
    return Submission(
        name=folder.name,
        kind=kind,
        directory=folder.resolve(),
        entry_point=entry_point,
        container=_text_field(metadata, "container", required=docker),
        container_gpu=_text_field(metadata, "container_gpu", required=False),
    )


def _shown(folder: Path) -> str:
    """A folder as messages and result files show it: escaped where it is not printable UTF-8."""
    text = str(folder)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = str(folder).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text if text.isprintable() else repr(text)[1:-1]


def discover(
    directory: str | os.PathLike, kind: str, *, parameter: str, docker: bool
) -> tuple[list[Submission], dict[str, str]]:
    """The submissions of type `kind` in the subfolders of `directory` (by name), and the
    folders skipped because their metadata is unusable, with the reasons.

    Folders without `metadata.json` and submissions of another type are left out
    silently, so one directory can hold every kind. `parameter` names the argument
    `directory` came from, for the error raised when it is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ParameterError(f"{parameter} {directory} is not a directory", parameter)
    try:
        folders = sorted(directory / name for name in os.listdir(directory))
    except OSError as error:
        raise ParameterError(
            f"{parameter} {directory} cannot be listed: {reason(error)}", parameter
        ) from error
    found, skipped = [], {}
    for folder in folders:
        try:
            if not (folder.is_dir() and os.path.lexists(folder / METADATA)):
                continue
            submission = read_submission(folder, docker=docker)
        except (SubmissionError, OSError) as error:
            skipped[_shown(folder)] = reason(error)
            continue
        if submission.kind == kind:
            found.append(submission)
    return found, skipped
