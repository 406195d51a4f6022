"""The student's process: an isolated interpreter, confined, reached only through two pipes.

A grading :class:`Session` prepares a *runtime* folder that the student's process may read:
the runner (``_tinyodl_runner.py``, ``_tinyodl_wire.py``), the zygote and its confinement
code (``_tinyodl_supervisor.py``, ``_tinyodl_confine.py``), a ``site`` folder with links to
the allowed packages (numpy, scipy) and, per set of allowed tinyodl modules, a filtered copy
of just those modules (:mod:`tinyodl.grading.closure`). It starts the zygote, a trusted
``python -I -S -B`` that has imported the runner and numpy. Each :class:`StudentProcess` is
then forked from it by a per-task supervisor, in a new session with rlimits, optionally as
the sandbox user, without capabilities, under seccomp (no new processes, no sockets, no
ptrace) and Landlock (read: the interpreter, its
standard library without ``site-packages``, system libraries, the runtime folder and the
allowed packages; write: its own work folder; no TCP; no signals out of its domain).

:mod:`tinyodl.grading.process` talks to each student process and ends it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tinyodl.grading import _confine, closure

HERE = Path(__file__).resolve().parent
_RUNTIME_FILES = {
    "_supervisor.py": "_tinyodl_supervisor.py",
    "_confine.py": "_tinyodl_confine.py",
    "_runner.py": "_tinyodl_runner.py",
    "_wire.py": "_tinyodl_wire.py",
}
_SYSTEM_READ = ("/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/dev/zero", "/dev/urandom", "/dev/random")
_SYSTEM_DIRS = ("/sys/devices/system/cpu", "/usr/share/zoneinfo")
_SITE_DIRS = ("site-packages", "dist-packages")
_BASE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}


class SandboxError(RuntimeError):
    """The sandbox could not be set up or started (a problem of the grading machine)."""


@dataclass(frozen=True)
class SandboxConfig:
    """How the student's process is confined (``tinyodl grade`` options in brackets).

    Attributes
    ----------
    packages : tuple of str
        Third-party packages student code may import [``--allow-package``]; the standard
        library is always there (minus ``site-packages``).
    memory_mb : int
        Address-space limit of the student's process, in MiB [``--memory-mb``].
    user : str or None
        Run student code as this user [``--sandbox-user``]; the grader must run as root.
    landlock : bool
        Use Landlock when the kernel has it (turn off only to test the fallback).
    subprocesses : bool
        Let student code start processes (at most ``max_processes`` for a sandbox user).
        Off by default: seccomp makes ``fork`` fail.
    file_mb : int
        Largest file the student's process may write, in MiB.
    max_message_mb : int
        Largest answer the grader reads from the student's process, in MiB.
    """

    packages: tuple[str, ...] = ("numpy", "scipy")
    memory_mb: int = 2048
    user: str | None = None
    landlock: bool = True
    subprocesses: bool = False
    max_processes: int = 64
    file_mb: int = 64
    max_message_mb: int = 128


@functools.lru_cache(maxsize=4)
def _interpreter_paths(interpreter: str) -> tuple[str, ...]:
    """``sys.path`` of ``interpreter -I -S``: its standard library, nothing else."""
    out = subprocess.run(
        [interpreter, "-I", "-S", "-c", "import json, sys; print(json.dumps(sys.path))"],
        capture_output=True,
        text=True,
        timeout=60,
        env={},
        check=True,
    )
    return tuple(p for p in json.loads(out.stdout) if p)


def base_interpreter() -> str:
    """The real Python binary behind ``sys.executable`` (outside any virtual environment)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _package_dirs(name: str) -> list[Path]:
    """Folder (or file) of an installed top-level package, plus its ``name.libs`` folder."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return []
    if spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]).resolve()
    else:
        path = Path(spec.origin).resolve()
    found = [path]
    libs = path.parent / f"{name}.libs"
    if libs.is_dir():
        found.append(libs.resolve())
    return found


def remove_tree(path: Path) -> None:
    """Remove a tree even where the student's code removed permissions from its folders."""

    def fix(function, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            function(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


class Session:
    """The runtime folder and sandbox plan shared by the student processes of one notebook."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.dir = Path(tempfile.mkdtemp(prefix="tinyodl-grade-"))
        self._lock = threading.Lock()
        self._copies: dict[tuple[str, ...], Path] = {}
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    # -- preparation -------------------------------------------------------------------------

    def _prepare(self) -> None:
        config = self.config
        os.chmod(self.dir, 0o711)
        self.user = self._lookup_user(config.user)
        self.interpreter = base_interpreter()
        self.stdlib = _interpreter_paths(self.interpreter)
        self.runtime = self.dir / "runtime"
        (self.runtime / "site").mkdir(parents=True)
        for source, target in _RUNTIME_FILES.items():
            shutil.copy(HERE / source, self.runtime / target)
        self.packages: list[str] = []
        self._package_paths: list[Path] = []
        for name in config.packages:
            self._link_package(name)
        if "numpy" not in self.packages:
            raise SandboxError("numpy must be installed and allowed: the runner needs it")
        for path in [self.dir, *self.runtime.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chmod(self.dir, 0o711)
        self.landlock_abi = _confine.landlock_abi() if config.landlock else 0
        self.seccomp = _confine.seccomp_supported()
        self._start_zygote()

    def _start_zygote(self) -> None:
        """The trusted process every student process is forked from (``_supervisor.py``)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._control = ours
        path = [str(self.runtime), str(self.runtime / "site")]
        boot = f"import sys; sys.path.extend({path!r}); import _tinyodl_supervisor; " + (
            "_tinyodl_supervisor.main()"
        )
        self._zygote_err = open(self.dir / "zygote.txt", "wb")  # noqa: SIM115
        try:
            self._zygote = subprocess.Popen(
                [self.interpreter, "-I", "-S", "-B", "-c", boot],
                stdin=theirs,
                stdout=subprocess.DEVNULL,
                stderr=self._zygote_err,
                env=dict(_BASE_ENV),
                cwd=self.runtime,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"could not start the grading zygote: {exc}") from exc
        finally:
            theirs.close()
        ours.settimeout(120)
        try:
            line = b""
            while not line.endswith(b"\n"):
                chunk = ours.recv(1 << 16)
                if not chunk:
                    break
                line += chunk
            answer = json.loads(line or b"{}")
        except (OSError, ValueError) as exc:
            answer = {"error": repr(exc)}
        ours.settimeout(None)
        if not answer.get("ready"):
            detail = (self.dir / "zygote.txt").read_text(errors="replace")[-2000:]
            raise SandboxError(f"the grading zygote did not start: {answer} {detail}")

    def spawn(self, job: dict, fds: list[int]) -> None:
        """Ask the zygote for a supervised student process (the job's pipes attached)."""
        body = json.dumps(job).encode()
        data = len(body).to_bytes(4, "big") + body
        with self._lock:
            try:
                sent = socket.send_fds(self._control, [data], fds)
                self._control.sendall(data[sent:])
            except OSError as exc:
                raise SandboxError(f"the grading zygote is gone: {exc}") from exc

    def _lookup_user(self, name: str | None) -> tuple[int, int] | None:
        if name is None:
            return None
        if os.geteuid() != 0:
            raise SandboxError(
                f"--sandbox-user {name}: the grader must run as root to run student code "
                f"as another user (it runs as uid {os.geteuid()})"
            )
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise SandboxError(f"--sandbox-user {name}: no such user") from None
        if entry.pw_uid == 0:
            raise SandboxError(f"--sandbox-user {name}: that user is root")
        return entry.pw_uid, entry.pw_gid

    def _link_package(self, name: str) -> None:
        if name in self.packages:
            return
        dirs = _package_dirs(name)
        if not dirs:
            return  # not installed: student code cannot import it either
        for path in dirs:
            link = self.runtime / "site" / (path.name if path.is_dir() else path.name)
            if not link.exists():
                link.symlink_to(path)
        self.packages.append(name)
        self._package_paths.extend(dirs)

    def tinyodl_copy(self, allow: tuple[str, ...], deny: tuple[str, ...] = ()) -> Path | None:
        """Folder holding the filtered copy of the allowed tinyodl modules (None if none)."""
        if not allow:
            return None
        key = tuple(sorted(allow))
        with self._lock:
            if key not in self._copies:
                modules = closure.closure(key, deny)
                target = self.runtime / f"tinyodl-{len(self._copies)}"
                closure.copy_modules(modules, target)
                for name in closure.third_party(modules):
                    self._link_package(name)
                for path in [target, *target.rglob("*")]:
                    os.chmod(path, 0o755 if path.is_dir() else 0o644)
                self._copies[key] = target
            return self._copies[key]

    # -- the sandbox plan ----------------------------------------------------------------------

    def _read_rules(self) -> list[tuple[str, int]]:
        rules: list[tuple[str, int]] = [(self.interpreter, _confine.READ)]
        prefix = Path(self.interpreter).parent.parent
        rules += [(str(p), _confine.READ) for p in sorted((prefix / "lib").glob("libpython*"))]
        for entry in self.stdlib:
            path = Path(entry)
            if path.is_file():
                rules.append((entry, _confine.READ))
            elif path.is_dir():
                rules.append((entry, _confine.FS_READ_DIR))
                for child in sorted(path.iterdir()):
                    if child.name not in _SITE_DIRS:
                        rules.append((str(child), _confine.READ))
        rules += [(p, _confine.READ) for p in _SYSTEM_READ + _SYSTEM_DIRS if os.path.isdir(p)]
        rules += [(p, _confine.FS_READ_FILE) for p in _SYSTEM_FILES if os.path.exists(p)]
        rules.append((os.devnull, _confine.FS_READ_FILE | _confine.FS_WRITE_FILE))
        rules += [(str(p), _confine.READ) for p in self._package_paths]
        rules.append((str(self.runtime), _confine.READ))
        return rules

    def _expose_plan(self, needed: list[str]) -> list[tuple[str, str, str]]:
        """Bind mounts that make ``needed`` reachable for the sandbox user (see _confine)."""
        if self.user is None:
            return []
        uid, gid = self.user
        for own in (self.runtime,):
            blocked = _confine.blocked_ancestor(str(own), uid, gid)
            if blocked is not None:
                raise SandboxError(
                    f"the sandbox user cannot reach the grader's temporary folder {own} "
                    f"({blocked} is private); set TMPDIR to a folder such as /tmp"
                )
        groups: dict[tuple[str, str], list[str]] = {}
        for path in needed:
            blocked = _confine.blocked_ancestor(path, uid, gid)
            if blocked is None:
                continue
            first = Path(path).relative_to(blocked).parts[0]
            groups.setdefault((blocked, first), []).append(path)
        plan = []
        for i, ((blocked, _first), paths) in enumerate(sorted(groups.items())):
            subtree = os.path.commonpath(paths) if len(paths) > 1 else paths[0]
            if os.path.isfile(subtree):
                subtree = os.path.dirname(subtree)
            stage = self.dir / f"stage-{i}"
            stage.mkdir(mode=0o700, exist_ok=True)
            plan.append((blocked, subtree, str(stage)))
        return plan

    def job(self, work: Path, extra_path: list[str], timeout: float) -> dict:
        """The supervisor's job for one student process (its pipes are attached apart)."""
        config = self.config
        rules = self._read_rules()
        rules.append((str(work), _confine.WRITE))
        processes = None
        if self.user is not None:
            processes = config.max_processes if config.subprocesses else 32
        needed = [p for p, _ in rules if not p.startswith(("/dev", "/sys", "/etc", "/proc"))]
        return {
            "path": extra_path,
            "env": {**_BASE_ENV, "HOME": str(work), "TMPDIR": str(work)},
            "cwd": str(work),
            "limits": {
                "memory": config.memory_mb * 2**20,
                "cpu": int(timeout) + 5,
                "file": config.file_mb * 2**20,
                "processes": processes,
            },
            "user": list(self.user) if self.user else None,
            "expose": self._expose_plan(needed),
            "landlock": rules if self.landlock_abi else None,
            "landlock_abi": self.landlock_abi or None,
            "seccomp": {"processes": config.subprocesses} if self.seccomp else None,
        }

    def describe(self) -> dict:
        """What protects this session (for ``extra_data`` and the report)."""
        return {
            "landlock_abi": self.landlock_abi,
            "seccomp": self.seccomp,
            "new_processes": self.config.subprocesses or not self.seccomp,
            "user": self.config.user,
            "packages": list(self.packages),
            "memory_mb": self.config.memory_mb,
        }

    def close(self) -> None:
        """Stop the zygote and remove the session's folder (student processes are gone)."""
        control = getattr(self, "_control", None)
        if control is not None:
            control.close()
            self._control = None
            try:
                self._zygote.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
            self._zygote_err.close()
        if self.dir.exists():
            remove_tree(self.dir)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
