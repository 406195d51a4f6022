"""``tinyodl exercises gradescope EXERCISE --out autograder.zip``: a Gradescope autograder.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once (as root) to
build the image, then for every submission copies ``run_autograder`` to
``/autograder/run_autograder`` and runs it (as root) with the upload in
``/autograder/submission/``; it reads ``/autograder/results/results.json``. The bundle holds

* ``setup.sh``: installs tinyodl into its own virtual environment (``/opt/tinyodl``, readable
  by the sandbox user) from the package in ``dist/`` -- a source archive of the clone's
  package (``tinyodl/``, ``kernels/`` and the build files; no exercise sources, so no
  solutions) or a wheel given with ``--wheel`` -- and links the ``tinyodl`` command into
  ``/usr/local/bin``; then makes ``/autograder/source`` unreadable to other users (private
  tests). Dependencies come from PyPI while Gradescope builds the image, or, with
  ``--wheelhouse``, from wheels inside the zip (no network needed);
* ``run_autograder``: finds the notebook in the submission and runs ``tinyodl grade`` on it
  with ``--exercise``, ``--sandbox-user nobody`` (when root) and, with ``--tests``, the
  private grader file, writing ``results.json``;
* ``autograder.env``: the settings both scripts read (exercise, timeout, sandbox user);
* ``README.txt``: what the bundle is, its total points and how it was made.

Every ``/autograder`` path can be moved with ``TINYODL_AUTOGRADER_ROOT`` (the tests use a
temporary tree shaped like Gradescope's); the defaults are Gradescope's.
"""

from __future__ import annotations

import gzip
import io
import os
import shlex
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tinyodl.course.catalog import find_root

#: Files of a clone that make the installable package (exercise sources stay out).
PACKAGE_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "MANIFEST.in")
PACKAGE_DIRS = ("tinyodl", "kernels")
_SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", "build", "dist"}
_SKIP_SUFFIXES = (".so", ".pyd", ".pyc", ".o", ".c", ".html")

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder image.
# It installs tinyodl from the package in dist/ into its own virtual environment.
set -euo pipefail
ROOT="${TINYODL_AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
VENV="${TINYODL_VENV:-/opt/tinyodl}"
BIN="${TINYODL_BIN_DIR:-/usr/local/bin}"
# shellcheck disable=SC1091
source "$SOURCE/autograder.env"

if ! python3 -m venv --help >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-dev build-essential
fi
python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
if [ -d "$SOURCE/wheels" ]; then   # offline: everything comes from the zip
  PIP+=(--no-index --find-links "$SOURCE/wheels")
else
  "${PIP[@]}" install --upgrade pip
fi
"${PIP[@]}" install "$SOURCE/dist/$PACKAGE"
mkdir -p "$BIN"
ln -sf "$VENV/bin/tinyodl" "$BIN/tinyodl"
chmod -R a+rX "$VENV"              # the sandbox user runs this Python
"$VENV/bin/tinyodl" info
# Private tests and settings stay unreadable to the sandbox user.
chmod -R go-rwx "$SOURCE"
if [ "$(id -u)" = 0 ] && [ -n "$SANDBOX_USER" ]; then id "$SANDBOX_USER"; fi
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this, as root, for every submission: grade the submitted notebook.
set -uo pipefail
ROOT="${TINYODL_AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
RESULTS="$ROOT/results/results.json"
# shellcheck disable=SC1091
source "$SOURCE/autograder.env"
TINYODL="${TINYODL:-tinyodl}"
mkdir -p "$ROOT/results"

mapfile -t notebooks < <(find "$ROOT/submission" -name '*.ipynb' \
  -not -path '*/.ipynb_checkpoints/*' 2>/dev/null | sort)
notebook=""
for candidate in "${notebooks[@]}"; do
  if [ "$(basename "$candidate")" = "$EXERCISE.ipynb" ]; then notebook="$candidate"; fi
done
if [ -z "$notebook" ] && [ "${#notebooks[@]}" -gt 0 ]; then notebook="${notebooks[0]}"; fi
if [ -z "$notebook" ]; then
  python3 - "$RESULTS" "$EXERCISE" <<'EOF'
import json, sys
message = (f"No .ipynb notebook in the submission: upload your {sys.argv[2]}.ipynb "
           "(File > Download in Jupyter).")
with open(sys.argv[1], "w") as f:
    json.dump({"score": 0.0, "output": message, "visibility": "visible",
               "stdout_visibility": "hidden", "tests": []}, f, indent=2)
print(message)
EOF
  exit 0
fi
if [ "${#notebooks[@]}" -gt 1 ]; then
  echo "several notebooks in the submission; grading $(basename "$notebook")"
fi

args=(grade "$notebook" --exercise "$EXERCISE" --timeout "$TIMEOUT" --json "$RESULTS")
if [ "$(id -u)" = 0 ] && [ -n "$SANDBOX_USER" ]; then
  args+=(--sandbox-user "$SANDBOX_USER")
fi
if [ -f "$SOURCE/private_tests.py" ]; then
  args+=(--tests "$SOURCE/private_tests.py")
fi
"$TINYODL" "${args[@]}"
"""


class BundleError(ValueError):
    """The bundle cannot be made (unknown exercise, no grader, a bad option)."""


def resolve_exercise(root: Path, exercise: str) -> Path:
    """``"03"``, ``"03_quantization"`` or a path -> the exercise source ``exercises/NN_*.py``."""
    path = Path(exercise)
    if path.suffix == ".py" and path.exists():
        return path
    number = exercise[:2]
    matches = sorted((root / "exercises").glob(f"{number}_*.py"))
    if not number.isdigit() or not matches:
        available = sorted(p.stem for p in (root / "exercises").glob("[0-9][0-9]_*.py"))
        raise BundleError(f"no exercise {exercise!r} in {root / 'exercises'}; have {available}")
    if len(exercise) > 2 and matches[0].stem != exercise:
        raise BundleError(f"no exercise {exercise!r}; did you mean {matches[0].stem}?")
    return matches[0]


def _package_files(root: Path) -> list[Path]:
    """The files of the installable package, relative to ``root`` (git-tracked when a repo)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", *PACKAGE_FILES, *PACKAGE_DIRS],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [Path(p) for p in listed.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = [Path(p) for p in PACKAGE_FILES if (root / p).is_file()]
        for folder in PACKAGE_DIRS:
            files += [
                p.relative_to(root) for p in sorted((root / folder).rglob("*")) if p.is_file()
            ]
    keep = []
    for path in files:
        if _SKIP_PARTS & set(path.parts) or path.suffix in _SKIP_SUFFIXES:
            continue
        if path.parts[0] == "kernels" and path.suffix not in (".pyx", ".pxd", ".h"):
            continue
        if (root / path).is_file():
            keep.append(path)
    return sorted(keep)


def source_archive(root: Path, version: str) -> tuple[str, bytes]:
    """A ``tinyodl-VERSION.tar.gz`` of the package's files (deterministic bytes)."""
    name = f"tinyodl-{version}"
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in _package_files(root):
                data = (root / path).read_bytes()
                info = tarfile.TarInfo(f"{name}/{path.as_posix()}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return f"{name}.tar.gz", buffer.getvalue()


def _env_file(exercise: str, timeout: float, sandbox_user: str, package: str) -> str:
    values = {
        "EXERCISE": exercise,
        "TIMEOUT": f"{timeout:g}",
        "SANDBOX_USER": sandbox_user,
        "PACKAGE": package,
    }
    lines = ["# Settings of this autograder (read by setup.sh and run_autograder)."]
    lines += [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def requirements(root: Path) -> list[str]:
    """The build and run requirements in ``root/pyproject.toml``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise BundleError("reading pyproject.toml needs Python 3.11 or tomli") from None
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return [*data["build-system"]["requires"], *data["project"]["dependencies"]]


def download_wheelhouse(
    root: Path, target: Path, python_version: str = "3.10", platform: str = "manylinux2014_x86_64"
) -> list[Path]:
    """Download wheels of tinyodl's build and run dependencies for Gradescope's Python.

    Needs PyPI (run it where you make the bundle); Gradescope's default image is Ubuntu 22.04
    with Python 3.10 on x86_64.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "--platform", platform, "-d", str(target)]
    proc = subprocess.run([*cmd, *requirements(root)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BundleError(f"pip download failed:\n{proc.stderr[-3000:]}")
    return sorted(target.glob("*.whl"))


def build_bundle(
    exercise: str,
    out: str | Path,
    root: str | Path = ".",
    tests: str | Path | None = None,
    wheel: str | Path | None = None,
    wheelhouse: str | Path | None = None,
    timeout: float = 60.0,
    sandbox_user: str = "nobody",
) -> dict:
    """Write the autograder zip of one exercise; return what it holds.

    Parameters
    ----------
    exercise : str
        ``"03"``, ``"03_quantization"`` or the path of an exercise source.
    out : path
        The zip to write (``autograder.zip``).
    root : path
        The clone (the package is archived from it).
    tests : path, optional
        A private grader file (``docs/grading.md``), used instead of the built-in grader.
    wheel : path, optional
        Install this tinyodl wheel instead of building from the source archive (build it for
        Gradescope's Python and platform).
    wheelhouse : path, optional
        A folder of wheels (see :func:`download_wheelhouse`) copied into the zip so that
        ``setup.sh`` installs without a network.
    timeout : float
        Seconds per task (``tinyodl grade --timeout``).
    sandbox_user : str
        The unprivileged user student code runs as (empty: none).

    Returns
    -------
    dict
        ``{"zip", "exercise", "points", "tasks", "files"}``.
    """
    from tinyodl import __version__
    from tinyodl.grading.api import collect_tasks
    from tinyodl.grading.engine import grader_module_name, load_grader

    root = find_root(root)
    source = resolve_exercise(root, exercise)
    name = source.stem
    grader = load_grader(str(Path(tests).resolve()) if tests else grader_module_name(name))
    tasks = collect_tasks(grader)
    if getattr(grader, "EXERCISE", name) != name:
        raise BundleError(f"the grader is for exercise {grader.EXERCISE}, not {name}")
    points = sum(t.points for t in tasks)

    files: dict[str, bytes] = {}
    if wheel is not None:
        wheel = Path(wheel)
        if wheel.suffix != ".whl" or not wheel.is_file():
            raise BundleError(f"--wheel {wheel}: not a wheel file")
        package, data = wheel.name, wheel.read_bytes()
    else:
        package, data = source_archive(root, __version__)
    files[f"dist/{package}"] = data
    if wheelhouse is not None:
        wheels = sorted(Path(wheelhouse).glob("*.whl"))
        if not wheels:
            raise BundleError(f"--wheelhouse {wheelhouse}: no .whl files")
        for path in wheels:
            files[f"wheels/{path.name}"] = path.read_bytes()
    if tests:
        files["private_tests.py"] = Path(tests).read_bytes()
    files["autograder.env"] = _env_file(name, timeout, sandbox_user, package).encode()
    files["setup.sh"] = SETUP_SH.encode()
    files["run_autograder"] = RUN_AUTOGRADER.encode()
    files["README.txt"] = _readme(name, tasks, points, package, tests, wheelhouse).encode()

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member, data in sorted(files.items()):
            info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            executable = member in ("setup.sh", "run_autograder")
            info.external_attr = (0o755 if executable else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    os.replace(tmp, out)
    return {
        "zip": out,
        "exercise": name,
        "points": points,
        "tasks": [(t.id, t.points, t.hidden) for t in tasks],
        "files": sorted(files),
    }


def _readme(name, tasks, points, package, tests, wheelhouse) -> str:
    lines = [
        f"Gradescope autograder for tinyodl exercise {name}",
        "",
        f"Total points: {points:g} (set the assignment's total to this).",
        "",
    ]
    lines += [f"  {t.name}: {t.points:g}" + (" (hidden)" if t.hidden else "") for t in tasks]
    lines += [
        "",
        f"Installs: dist/{package}"
        + (" with the wheels in wheels/ (no network needed)" if wheelhouse else " (from PyPI)"),
        f"Grader: {'private_tests.py' if tests else 'the one built into tinyodl'}",
        "",
        "Students upload their notebook (.ipynb). run_autograder grades it with",
        "`tinyodl grade --exercise ... --sandbox-user ...` (see autograder.env) and writes",
        "/autograder/results/results.json. Made by `tinyodl exercises gradescope`.",
        "",
    ]
    return "\n".join(lines)
