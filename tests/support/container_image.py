"""The image's recipe as the tests read it: the Dockerfile's instructions (ARGs and ENVs
resolved, with dockerfile-parse), its .dockerignore (matched as docker-py does), the
submissions' metadata, and the user the image's commands run as."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from docker.utils.build import PatternMatcher
from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
SUBMISSIONS = REPO / "submissions"
# What the base image sets before our Dockerfile runs: python:3.11-slim-bookworm sets
# PATH, LANG, GPG_KEY and PYTHON_VERSION (the last two are not read by anything here).
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
CHECKPOINT = "ens_adv_inception_resnet_v2.ckpt"
CHECKPOINT_SUFFIXES = (".index", ".data-00000-of-00001")


# ----------------------------------------------------------------- the Dockerfile


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with the ARGs and ENVs in effect at its line."""

    name: str
    value: str
    args: dict[str, str]
    envs: dict[str, str]
    line: int

    def substitute(self, word: str) -> str:
        """`$NAME` / `${NAME}` replaced as Docker does (ENV wins over ARG)."""
        scope = {**self.args, **self.envs}

        def value(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            assert name in scope, f"Dockerfile line {self.line}: ${name} is not defined"
            return scope[name]

        result = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, word)
        assert "${" not in result, f"Dockerfile line {self.line}: cannot substitute {word!r}"
        return result

    def words(self) -> list[str]:
        """Arguments: JSON (exec) form as is, else shell words with variables substituted."""
        exec_form = self.exec_form()
        if exec_form is not None:
            return exec_form
        words = WordSplitter(self.value, args=self.args, envs=self.envs).split()
        return [self.substitute(word) for word in words]

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.value)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[str, list[Instruction]]:
    """The base image (build ARGs at their defaults) and the instructions, comments dropped."""
    parser = DockerfileParser(path=str(path), env_replace=True, parent_env=dict(BASE_IMAGE_ENV))
    steps = [
        Instruction(
            name=item["instruction"].upper(),
            value=item["value"],
            args=dict(context.args),
            envs=dict(context.envs),
            line=item["startline"] + 1,
        )
        for item, context in zip(parser.structure, parser.context_structure, strict=True)
        if item["instruction"] != "COMMENT"
    ]
    return parser.baseimage, steps


def instructions(name: str) -> list[Instruction]:
    return [step for step in parse_dockerfile()[1] if step.name == name]


def last(name: str) -> Instruction:
    found = instructions(name)
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def metadata(folder: Path = REPO) -> dict:
    return json.loads((folder / "metadata.json").read_text(encoding="utf-8"))


class DockerIgnore:
    """The build context's .dockerignore, read and matched as docker-py's build reads and
    matches it (`docker.utils.build.PatternMatcher`, moby's rules)."""

    def __init__(self, context: Path):
        path = context / ".dockerignore"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        self.patterns = [line.strip() for line in lines if line.strip() and line.strip()[0] != "#"]
        self.has_exceptions = any(pattern.startswith("!") for pattern in self.patterns)
        self._matcher = PatternMatcher(self.patterns)

    def excludes(self, relative: str) -> bool:
        """Whether a context path (relative, '/'-separated) is left out of the context."""
        return bool(self._matcher.matches(relative))


def planned_user(steps: list[Instruction] | None = None) -> tuple[int, int]:
    """The numeric uid:gid the image's commands run as: the last USER (nobody if it is a
    name), else the user the Dockerfile creates (the entry point drops to it), else root."""
    steps = steps or parse_dockerfile()[1]
    users = [step for step in steps if step.name == "USER"]
    if not users:
        created = [
            re.search(r"useradd\b.*?--uid[= ](\d+)(?:.*?--gid[= ](\d+))?", step.value)
            for step in steps
            if step.name == "RUN"
        ]
        found = [match for match in created if match]
        if not found:
            return 0, 0
        uid, gid = found[-1].groups()
        return int(uid), int(gid or uid)
    uid, _, gid = users[-1].words()[0].partition(":")
    if not uid.isdigit():
        return 65534, 65534
    return int(uid), int(gid) if gid.isdigit() else 0
