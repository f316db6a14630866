"""Replaying the Docker image natively: the harness behind tests/system/test_docker.py.

Where no Docker engine runs (CI), the image is *replayed*. The Dockerfile is parsed
with dockerfile-parse (ARGs and ENVs resolved) and its instructions are performed, in
order, in a temporary root that stands for the image's filesystem: container path P is
ROOT/P. COPY copies from the repository honouring .dockerignore; the `pip install` of a
RUN line becomes a non-editable install of a wheel built from the replayed folder into
a fresh target directory (TensorFlow and the other dependencies stand for the base
image's and come from this virtualenv); `rm`, `groupadd` and `useradd` are replayed;
any other RUN command fails the test until the replay learns it. The calls then run
the ENTRYPOINT as the Dockerfile's USER (setpriv), in WORKDIR, with the Dockerfile's
ENV (container paths mapped), a read-only input folder and the checkpoint mounted
read-only, as `docker run` would; messages are mapped back to container paths.

The base image's python3 is a wrapper around a virtualenv made for the replay: this
virtualenv's packages on a plain path (so no .pth file of the repository's editable
install runs, whose finder would serve modules a broken wheel lacks) and, when the
image's user cannot execute this virtualenv's interpreter (pyenv under a 0700 /root),
another installation of the same Python version. A probe in that virtualenv records
where every process imported `defense` and `attacks` from; the calls must take them
from the installed wheel.

Not replayed: the base image itself (its Python, and the TensorFlow and CUDA wheels
the image installs, are this machine's), GPUs, `--network=none` and the memory/CPU
limits of the evaluation. tests/system/test_docker_engine.py runs all of that, the toolkit's
and the cloud worker's calls included, against a real Docker engine where one runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import platform
import posixpath
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.container_image import (
    BASE_IMAGE_ENV,
    CHECKPOINT,
    CHECKPOINT_SUFFIXES,
    DOCKERFILE,
    REPO,
    DockerIgnore,
    Instruction,
    parse_dockerfile,
    planned_user,
)
from tests.support.container_mounts import make_read_only, remove_tree, walk_modes

# Top-level folders that come from the base image (the host's here); every other
# absolute path belongs to the image or to a mount and is mapped under the replay root.
SYSTEM_DIRS = frozenset(
    [
        "bin",
        "boot",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "media",
        "mnt",
        "opt",
        "proc",
        "run",
        "sbin",
        "srv",
        "sys",
        "usr",
        "var",
    ]
)
# The build machine's network set-up, passed to the replayed `pip` (not to the calls).
BUILD_HOST_VARS = re.compile(
    r"PIP_\w+|\w*_PROXY|\w*_proxy|SSL_CERT_\w+|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE"
)
# pip options of a replayed `pip install`: passed on, or meaningless for a --target wheel.
PIP_PASSED_ON = {"--no-cache-dir", "-q", "--quiet", "-v", "--verbose", "--no-input"}
PIP_IGNORED = {
    "--no-deps",
    "-U",
    "--upgrade",
    "--compile",
    "--no-compile",
    "--root-user-action",
    "--break-system-packages",
}
BUILD_TIMEOUT = 600
CALL_TIMEOUT = 900


def as_user(uid: int, gid: int) -> list[str]:
    """Command prefix that drops to uid:gid when running as root (as `USER` does)."""
    if os.geteuid() != 0 or uid == 0:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


def base_interpreter(uid: int, gid: int) -> str:
    """A Python of this version that uid can execute: this virtualenv's base interpreter,
    or, where that lives under a folder the user cannot enter (pyenv in /root), another
    installation of the same version. It stands for the base image's python3."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        getattr(sys, "_base_executable", None),
        os.path.realpath(sys.executable),
        shutil.which(f"python{version}"),
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ]
    tried = []
    for candidate in dict.fromkeys(c for c in candidates if c):
        probe = subprocess.run(
            [
                *as_user(uid, gid),
                "/bin/sh",
                "-c",
                'exec "$0" -c "import sys; print(\'%d.%d\' % sys.version_info[:2])"',
                candidate,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            cwd="/",
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
        tried.append(f"{candidate}: {probe.stderr.strip() or probe.stdout.strip()}")
    # Failing, not skipping: without an interpreter the image's user can run, nothing of
    # the container would be tested and the tests would pass for nothing.
    pytest.fail(
        f"no Python {version} that uid {uid} can execute (install python3 {version} from the "
        f"system's packages): {tried}"
    )


PROBE = '''"""Replay probe: records at exit where this process imported the project from."""
import atexit
import json
import os
import sys

LOG = {log!r}


def _record():
    modules = {{
        name: [getattr(module, "__file__", None), list(getattr(module, "__path__", []) or [])]
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in ("defense", "attacks")
    }}
    if not modules:
        return
    record = {{
        "argv": sys.argv,
        "executable": sys.executable,
        "modules": modules,
        "finders": [getattr(f, "__name__", type(f).__name__) for f in sys.meta_path],
    }}
    try:
        with open(os.path.join(LOG, "%d.json" % os.getpid()), "w") as handle:
            json.dump(record, handle)
    except OSError:
        pass


atexit.register(_record)
'''


# ----------------------------------------------------------------------- replay


@dataclasses.dataclass(repr=False)
class CallResult:
    entrypoint: list[str]
    args: list[str]
    cwd: str
    returncode: int
    stdout: str
    stderr: str
    imports: list[dict]
    target: Path
    root: Path

    def __repr__(self) -> str:
        return f"<docker run IMAGE {shlex.join(self.args)}: exit {self.returncode}>"

    def expect(self, condition: bool, what: str) -> None:
        """Fail with `what` and the call's output (mapped back to container paths)."""
        if not condition:
            pytest.fail(what + self.report(), pytrace=False)

    def to_container(self, text: str) -> str:
        return text.replace(str(self.root), "")

    def report(self) -> str:
        return (
            f"\n$ docker run -w {self.cwd} IMAGE {shlex.join(self.args)}"
            f"  # entry point {shlex.join(self.entrypoint)}\nexit {self.returncode}"
            f"\n--- stdout (tail)\n{self.stdout[-3000:]}\n--- stderr (tail)\n{self.stderr[-6000:]}"
        )

    def assert_imported_the_wheel(self) -> None:
        """Every process that imported the project took it from the installed wheel."""
        self.expect(bool(self.imports), "no replayed process imported defense or attacks")
        for record in self.imports:
            process = shlex.join(self.to_container(arg) for arg in record["argv"])
            for name, (file, paths) in sorted(record["modules"].items()):
                places = [file] if file else paths
                self.expect(bool(places), f"{name} has neither __file__ nor __path__ ({process})")
                for place in places:
                    self.expect(
                        not Path(place).resolve().is_relative_to(REPO),
                        f"{name} was imported from the repository ({place}), not the image",
                    )
                    self.expect(
                        Path(place).is_relative_to(self.target),
                        f"`{process}` imported {name} from {self.to_container(place)}, not from "
                        f"the installed package ({self.to_container(str(self.target))})",
                    )
            self.expect("_EditableFinder" not in record["finders"], f"{record['finders']}")


class Replay:
    """An image built by replaying the Dockerfile under `root` (container path P = root/P)."""

    def __init__(self, root: Path, context: Path = REPO, dockerfile: Path = DOCKERFILE):
        self.root, self.context = root, context
        self.base_image, self.steps = parse_dockerfile(dockerfile)
        self.ignore = DockerIgnore(context)
        self.workdir = "/"
        self.user = "0"
        self.users: dict[str, tuple[int, int, str]] = {"root": (0, 0, "/root")}
        self.groups: dict[str, int] = {"root": 0}
        self.envs: dict[str, str] = dict(BASE_IMAGE_ENV)
        self.entrypoint: list[str] = []
        self.pip_installs = 0
        self.modes: dict[str, int] = {}
        self.image_roots = {"tmp"}
        tools = root / ".replay"
        self.target = tools / "site-packages"
        self.bin = tools / "bin"
        self.log = tools / "imports"
        self.venv = tools / "python"

    # -- paths
    def host(self, path: str) -> Path:
        normal = posixpath.normpath(path)
        assert normal.startswith("/"), f"not a container path: {path!r}"
        return self.root / normal.lstrip("/") if normal != "/" else self.root

    @staticmethod
    def in_image(path: str) -> bool:
        return path.startswith("/") and path.strip("/").split("/")[0] not in SYSTEM_DIRS

    def map_value(self, value: str) -> str:
        """An ENV value or argument with its container paths mapped (':'-lists too)."""
        parts = value.split(":")
        return ":".join(str(self.host(p)) if self.in_image(p) else p for p in parts)

    def to_container(self, text: str) -> str:
        return text.replace(str(self.root), "")

    def map_script_literals(self, folder: Path) -> None:
        """Container paths written literally in shell scripts (`repo=/app`) point into the
        replay root, as the mounts and ENV values do."""
        roots = sorted(r for r in self.image_roots if r != "tmp")
        if not roots:
            return
        literal = re.compile(
            r"(?<![\w.$}/:-])/(" + "|".join(map(re.escape, roots)) + r")(?=[/\s\"';:)|&]|$)",
            re.M,
        )
        for script in folder.rglob("*.sh"):
            if script.is_symlink() or not script.is_file():
                continue
            text = script.read_text(encoding="utf-8")
            mapped = literal.sub(lambda m: str(self.host("/" + m.group(1))), text)
            if mapped != text:
                mode = script.stat().st_mode
                script.write_text(mapped, encoding="utf-8")
                script.chmod(stat.S_IMODE(mode))

    # -- users
    def uid_gid(self) -> tuple[int, int]:
        user, _, group = self.user.partition(":")
        if user.isdigit():
            uid = int(user)
        else:
            assert user in self.users, f"USER {user} is not created by the Dockerfile"
            uid = self.users[user][0]
        if group:
            gid = int(group) if group.isdigit() else self.groups[group]
        else:
            gid = next((g for u, g, _ in self.users.values() if u == uid), 0)
        return uid, gid

    def home(self) -> str:
        uid, _ = self.uid_gid()
        return next((home for u, _, home in self.users.values() if u == uid), "/")

    def give_to_user(self, path: Path, owner: tuple[int, int] | None = None) -> None:
        """chown path to `owner`, by default the user the image's commands run as."""
        if os.geteuid() == 0:
            os.chown(path, *(owner or planned_user(self.steps)))

    # -- build
    def build(self) -> Replay:
        froms = [step for step in self.steps if step.name == "FROM"]
        assert len(froms) == 1, "multi-stage Dockerfiles are not replayed"
        self._prepare()
        for step in self.steps:
            handler = getattr(self, f"_do_{step.name.lower()}", None)
            assert handler is not None, (
                f"Dockerfile line {step.line}: the replay in test_docker.py does not know "
                f"{step.name}; teach it"
            )
            handler(step)
            self.envs = dict(step.envs)
        assert self.pip_installs, "the Dockerfile no longer installs the package (no pip install)"
        assert self.entrypoint, "the Dockerfile has no ENTRYPOINT"
        for name in sorted(self.image_roots - {"tmp"}):
            folder = self.host("/" + name)
            if folder.exists():
                self.map_script_literals(folder)
        walk_modes(self.root / ".replay", dirs=0o555, files=0o444)
        self.log.chmod(0o1777)
        for name in sorted(self.image_roots - {"tmp", "home"}):
            if self.host("/" + name).exists():
                walk_modes(self.host("/" + name), dirs=0o555, files=0o444)
        for path, mode in self.modes.items():  # what the Dockerfile's chmod set
            self.host(path).chmod(mode)
        return self

    def _prepare(self) -> None:
        self.root.chmod(0o755)
        tmp = self.host("/tmp")
        tmp.mkdir()
        tmp.chmod(0o1777)
        self.host("/root").mkdir(mode=0o700)  # the base image's root home
        for folder in (self.bin, self.log, self.target):
            folder.mkdir(parents=True)
        # python3 of the base image: a virtualenv whose only packages are this one's
        # (TensorFlow, numpy, ...), added as a plain path, so that no .pth file of ours
        # (the repository's editable install) runs in the replay.
        base = base_interpreter(*planned_user(self.steps))
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        (self.venv / "bin").mkdir(parents=True)
        (self.venv / "bin" / "python3").symlink_to(base)
        (self.venv / "pyvenv.cfg").write_text(
            f"home = {Path(base).parent}\ninclude-system-site-packages = false\n"
            f"version = {platform.python_version()}\n"
        )
        site = self.venv / "lib" / version / "site-packages"
        site.mkdir(parents=True)
        ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
        (site / "venv-packages.pth").write_text("".join(f"{path}\n" for path in ours))
        (site / "_replay_probe.py").write_text(PROBE.format(log=str(self.log)))
        (site / "replay-probe.pth").write_text("import _replay_probe\n")
        wrapper = self.bin / "python3"
        wrapper.write_text(
            "#!/bin/sh\n# The base image's python3 (with TensorFlow), for the replay.\n"
            f'exec {shlex.quote(str(self.venv / "bin" / "python3"))} "$@"\n'
        )
        wrapper.chmod(0o755)
        (self.bin / "python").symlink_to("python3")

    def _do_from(self, step: Instruction) -> None:
        pass

    def _do_arg(self, step: Instruction) -> None:
        pass

    _do_env = _do_label = _do_expose = _do_volume = _do_stopsignal = _do_cmd = _do_arg

    def _do_workdir(self, step: Instruction) -> None:
        self.workdir = posixpath.normpath(posixpath.join(self.workdir, step.words()[0]))
        self._own(self.workdir)
        self.host(self.workdir).mkdir(parents=True, exist_ok=True)

    def _own(self, path: str) -> None:
        assert self.in_image(path), f"the replay cannot write {path} (a base-image folder)"
        self.image_roots.add(path.strip("/").split("/")[0])

    def _do_user(self, step: Instruction) -> None:
        self.user = step.words()[0]

    def _do_entrypoint(self, step: Instruction) -> None:
        self.entrypoint = step.exec_form() or ["/bin/sh", "-c", step.value]

    def _do_copy(self, step: Instruction) -> None:
        words = step.words()
        flags = [word for word in words if word.startswith("--")]
        *sources, dest = [word for word in words if not word.startswith("--")]
        owner = None
        for flag in flags:
            name, _, value = flag[2:].partition("=")
            if name == "chown":
                owner = value
            elif name != "link":
                pytest.fail(f"Dockerfile line {step.line}: COPY --{name} is not replayed")
        target = posixpath.normpath(posixpath.join(self.workdir, dest))
        self._own(target)
        into_folder = dest.endswith("/") or len(sources) > 1 or self.host(target).is_dir()
        copied: list[Path] = []
        for source in sources:
            matches = sorted(glob.glob(str(self.context / source))) or [str(self.context / source)]
            for match in map(Path, matches):
                relative = match.relative_to(self.context).as_posix()
                assert match.exists() and (relative == "." or not self.ignore.excludes(relative)), (
                    f"Dockerfile line {step.line}: COPY source {source} is not in the context"
                )
                if match.is_dir():
                    copied += self._copy_tree(match, self.host(target))
                else:
                    folder = into_folder or len(matches) > 1
                    destination = self.host(target) / match.name if folder else self.host(target)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(match, destination, follow_symlinks=False)
                    copied.append(destination)
        if owner is not None and os.geteuid() == 0:
            user, _, group = owner.partition(":")
            uid = int(user) if user.isdigit() else self.users[user][0]
            gid = int(group) if group.isdigit() else self.groups.get(group, uid)
            for path in copied:
                os.chown(path, uid, gid, follow_symlinks=False)

    def _copy_tree(self, source: Path, destination: Path) -> list[Path]:
        """Docker's copy of a folder: its contents, minus what .dockerignore leaves out."""
        copied = []
        destination.mkdir(parents=True, exist_ok=True)
        for folder, dirs, files in os.walk(source):
            here = Path(folder)
            for name in list(dirs):
                path = here / name
                relative = path.relative_to(self.context).as_posix()
                excluded = self.ignore.excludes(relative)
                if path.is_symlink() or (excluded and not self.ignore.has_exceptions):
                    dirs.remove(name)
                    if not excluded:
                        files.append(name)
                    continue
                if not excluded:
                    (destination / path.relative_to(source)).mkdir(exist_ok=True)
            for name in files:
                path = here / name
                if self.ignore.excludes(path.relative_to(self.context).as_posix()):
                    continue
                out = destination / path.relative_to(source)
                out.parent.mkdir(parents=True, exist_ok=True)
                if path.is_symlink():
                    out.unlink(missing_ok=True)
                    out.symlink_to(os.readlink(path))
                else:
                    shutil.copy2(path, out)
                copied.append(out)
        return copied

    def _do_run(self, step: Instruction) -> None:
        exec_form = step.exec_form()
        if exec_form is not None:
            commands = [exec_form]
        else:
            lexer = shlex.shlex(step.value, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            commands, current = [], []
            for token in lexer:
                if token in ("&&", ";"):
                    commands.append(current)
                    current = []
                elif token and set(token) <= set("();<>|&"):
                    pytest.fail(f"Dockerfile line {step.line}: RUN with {token!r} is not replayed")
                else:
                    current.append(step.substitute(token))
            commands.append(current)
        for argv in filter(None, commands):
            self._run_command(step, argv)

    def _run_command(self, step: Instruction, argv: list[str]) -> None:
        if argv[:3] in (["python3", "-m", "pip"], ["python", "-m", "pip"]):
            argv = ["pip", *argv[3:]]
        if argv[0] in ("pip", "pip3") and argv[1:2] == ["install"]:
            self._pip_install(step, argv[2:])
        elif argv[0] in ("pip", "pip3") and argv[1:2] == ["uninstall"]:
            self._pip_uninstall(step, argv[2:])
        elif argv[:2] in (["python3", "-c"], ["python", "-c"]):
            self._build_run(step, argv[1:])
        elif argv[0] == "rm":
            self._rm(step, argv[1:])
        elif argv[0] == "mkdir":
            self._mkdir(step, argv[1:])
        elif argv[0] == "touch":
            for path in argv[1:]:
                self._in_workdir(step, path).touch()
        elif argv[0] == "chmod":
            self._chmod(step, argv[1:])
        elif argv[0] == "groupadd":
            self._groupadd(argv[1:])
        elif argv[0] == "useradd":
            self._useradd(argv[1:])
        else:
            pytest.fail(
                f"Dockerfile line {step.line}: the replay in test_docker.py does not know "
                f"`{shlex.join(argv)}`; teach it"
            )

    def build_environment(self, step: Instruction) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if BUILD_HOST_VARS.fullmatch(key)}
        env.update({key: self.map_value(value) for key, value in step.envs.items()})
        env["HOME"] = os.environ.get("HOME", "/root")  # the build machine's pip configuration
        env["PATH"] = f"{self.bin}:{env.get('PATH', BASE_IMAGE_ENV['PATH'])}"
        return env

    def _build_run(self, step: Instruction, argv: list[str]) -> None:
        env = self.build_environment(step)
        python3 = shutil.which("python3", path=env["PATH"])
        assert python3 == str(self.bin / "python3"), python3
        result = subprocess.run(
            [python3, *argv],
            cwd=self.host(self.workdir),
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        assert result.returncode == 0, (
            f"Dockerfile line {step.line}: replayed `python3 {shlex.join(argv)}` failed "
            f"(exit {result.returncode})\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )

    def _pip_install(self, step: Instruction, args: list[str]) -> None:
        passed, specs = [], []
        for arg in args:
            option = arg.partition("=")[0]
            if option in PIP_PASSED_ON:
                passed.append(arg)
            elif option in PIP_IGNORED:
                continue
            elif arg.startswith("-"):
                pytest.fail(f"Dockerfile line {step.line}: pip install {arg} is not replayed")
            else:
                specs.append(arg)
        assert specs, f"Dockerfile line {step.line}: pip install of nothing"
        for spec in specs:
            path = spec.partition("[")[0]
            folder = self.host(path) if path.startswith("/") else self.host(self.workdir) / path
            assert (folder / "setup.py").exists() or (folder / "pyproject.toml").exists(), (
                f"Dockerfile line {step.line}: pip install {spec} is not a local project; the "
                "replay takes dependencies from the virtualenv (teach tests/system/test_docker.py)"
            )
            wheels = self.root / ".replay" / f"wheels-{self.pip_installs}"
            wheels.mkdir()
            self._build_run(
                step, ["-m", "pip", "wheel", "--no-deps", *passed, "-w", str(wheels), str(folder)]
            )
            built = sorted(wheels.glob("*.whl"))
            assert len(built) == 1, f"pip wheel {folder} built {built}"
            self._build_run(
                step,
                [
                    "-m",
                    "pip",
                    "install",
                    "--no-deps",
                    "--upgrade",
                    *passed,
                    "--target",
                    str(self.target),
                    str(built[0]),
                ],
            )
            self.pip_installs += 1

    def _rm(self, step: Instruction, args: list[str]) -> None:
        options = "".join(arg[1:] for arg in args if arg.startswith("-"))
        assert set(options) <= set("rfR"), f"Dockerfile line {step.line}: rm -{options}"
        for arg in (arg for arg in args if not arg.startswith("-")):
            if arg.startswith("/"):
                assert self.in_image(arg), f"Dockerfile line {step.line}: rm {arg} (base image)"
                pattern = str(self.host(arg))
            else:
                pattern = str(self.host(self.workdir) / arg)
            matches = glob.glob(pattern)
            assert matches or "f" in options, f"Dockerfile line {step.line}: rm: no {arg}"
            for match in map(Path, matches):
                assert match.resolve().is_relative_to(self.root.resolve()), match
                if match.is_dir() and not match.is_symlink():
                    assert set(options) & set("rR"), f"rm without -r of folder {arg}"
                    shutil.rmtree(match)
                else:
                    match.unlink()

    def _in_workdir(self, step: Instruction, path: str) -> Path:
        container = posixpath.normpath(posixpath.join(self.workdir, path))
        assert self.in_image(container), f"Dockerfile line {step.line}: {path} (base image)"
        return self.host(container)

    def _pip_uninstall(self, step: Instruction, args: list[str]) -> None:
        """Remove an installed distribution's files (its RECORD) from the target."""
        names = [arg for arg in args if not arg.startswith("-")]
        assert set(args) - set(names) <= {"--yes", "-y"}, f"Dockerfile line {step.line}: {args}"
        for name in names:
            normal = re.sub(r"[-_.]+", "_", name).lower()
            infos = [
                info
                for info in self.target.glob("*.dist-info")
                if info.name.split("-")[0].lower() == normal
            ]
            assert infos, f"Dockerfile line {step.line}: pip uninstall {name}: not installed"
            for info in infos:
                for line in (info / "RECORD").read_text().splitlines():
                    (self.target / line.split(",")[0]).unlink(missing_ok=True)
                remove_tree(info)

    def _mkdir(self, step: Instruction, args: list[str]) -> None:
        assert set(a for a in args if a.startswith("-")) <= {"-p"}, f"mkdir {args}"
        for path in (a for a in args if not a.startswith("-")):
            self._in_workdir(step, path).mkdir(parents=True, exist_ok=True)

    def _chmod(self, step: Instruction, args: list[str]) -> None:
        mode, *paths = args
        assert re.fullmatch(r"[0-7]{3,4}", mode), f"Dockerfile line {step.line}: chmod {mode}"
        for path in paths:
            container = posixpath.normpath(posixpath.join(self.workdir, path))
            self._in_workdir(step, path).chmod(int(mode, 8))
            self.modes[container] = int(mode, 8)

    @staticmethod
    def _options(args: list[str], with_values: dict[str, str]) -> tuple[dict[str, str], list]:
        """`--opt value`, `--opt=value`, `-o value` and bare flags (value '') by long name."""
        options, positional, i = {}, [], 0
        while i < len(args):
            arg = args[i]
            if arg.startswith("-"):
                name, equals, value = arg.partition("=")
                name = with_values.get(name, name)
                if name in with_values.values() and not equals:
                    i += 1
                    value = args[i]
                options[name] = value
            else:
                positional.append(arg)
            i += 1
        return options, positional

    def _groupadd(self, args: list[str]) -> None:
        options, [name] = self._options(args, {"-g": "--gid", "--gid": "--gid"})
        self.groups[name] = int(options.get("--gid", 1000 + len(self.groups)))

    def _useradd(self, args: list[str]) -> None:
        with_values = {
            "-u": "--uid",
            "--uid": "--uid",
            "-g": "--gid",
            "--gid": "--gid",
            "-d": "--home-dir",
            "--home-dir": "--home-dir",
            "-s": "--shell",
            "--shell": "--shell",
            "-c": "--comment",
            "--comment": "--comment",
            "-G": "--groups",
            "--groups": "--groups",
        }
        options, [name] = self._options(args, with_values)
        uid = int(options.get("--uid", 1000 + len(self.users)))
        group = options.get("--gid", name)
        gid = int(group) if group.isdigit() else self.groups.setdefault(group, uid)
        home = options.get("--home-dir", f"/home/{name}")
        self.users[name] = (uid, gid, home)
        if "--create-home" in options or "-m" in options:
            self._own(home)
            folder = self.host(home)
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o750)
            if os.geteuid() == 0:
                os.chown(folder, uid, gid)

    # -- run
    def environment(self) -> dict[str, str]:
        """`docker run`'s environment: the image's ENV (mapped), HOME, and the replay's
        PATH (console scripts, then python3) and PYTHONPATH (the installed package)."""
        env = {key: self.map_value(value) for key, value in self.envs.items()}
        env["HOME"] = str(self.host(self.home()))
        env["PATH"] = f"{self.target / 'bin'}:{self.bin}:{env['PATH']}"
        env["PYTHONPATH"] = ":".join(filter(None, [str(self.target), env.get("PYTHONPATH")]))
        return env

    def call(
        self,
        *args: str,
        cwd: str | None = None,
        user: tuple[int, int] | None = None,
        timeout: int = CALL_TIMEOUT,
    ) -> CallResult:
        """`docker run [-w cwd] [--user uid:gid] IMAGE args...`: the ENTRYPOINT with args,
        as `user`, else as the Dockerfile's USER."""
        for record in self.log.glob("*.json"):
            record.unlink()
        argv = [self.map_value(word) for word in self.entrypoint]
        argv += [self.map_value(arg) if self.in_image(arg) else arg for arg in args]
        workdir = cwd or self.workdir
        result = subprocess.run(
            [*as_user(*(user or self.uid_gid())), *argv],
            cwd=self.host(workdir),
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        imports = [json.loads(path.read_text()) for path in sorted(self.log.glob("*.json"))]
        return CallResult(
            entrypoint=self.entrypoint,
            args=list(args),
            cwd=workdir,
            returncode=result.returncode,
            stdout=self.to_container(result.stdout),
            stderr=self.to_container(result.stderr),
            imports=imports,
            target=self.target,
            root=self.root,
        )

    def mount(self, container_path: str) -> Path:
        """A fresh host folder mounted at container_path (`-v HOST:PATH[:ro]`)."""
        folder = self.host(container_path)
        remove_tree(folder)
        folder.mkdir(parents=True)
        folder.chmod(0o755)
        return folder

    def checkpoint_dir(self) -> str:
        """Where the entry point looks for checkpoints: $DEFENSE_CHECKPOINT_DIR, else
        WORKDIR/checkpoints."""
        return self.envs.get("DEFENSE_CHECKPOINT_DIR") or posixpath.join(
            self.workdir, "checkpoints"
        )

    @contextlib.contextmanager
    def checkpoint_mounted(self, prefix: str | None) -> Iterator[Path]:
        """The checkpoint folder holding `prefix`'s files as CHECKPOINT (None: none at
        all), read-only; what the image had there is put back afterwards."""
        folder = self.host(self.checkpoint_dir())
        baked = folder.with_name(folder.name + ".baked-in")
        had = folder.exists()
        if had:
            folder.rename(baked)
        folder.mkdir(parents=True)
        try:
            if prefix is not None:
                for suffix in CHECKPOINT_SUFFIXES:
                    shutil.copyfile(f"{prefix}{suffix}", folder / f"{CHECKPOINT}{suffix}")
            make_read_only(folder)
            yield folder
        finally:
            remove_tree(folder)
            if had:
                baked.rename(folder)
