"""The Gradescope autograder bundle (``tinyodl exercises gradescope``), unpacked into a tree
shaped like Gradescope's and run against the released solution and student notebooks.

Gradescope unpacks the zip into ``/autograder/source``, copies ``run_autograder`` to
``/autograder/run_autograder`` and runs it as root with the upload in
``/autograder/submission``; here the same tree lives in a temporary folder
(``TINYODL_AUTOGRADER_ROOT``) and the ``tinyodl`` of this environment plays the installed one
(``setup.sh`` itself builds tinyodl from source, which takes minutes: it is not run here).
As root, student code runs as ``nobody``, as on Gradescope.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tinyodl.course.gradescope import BundleError, build_bundle, resolve_exercise
from tinyodl.grading.release import release_exercise

REPO = Path(__file__).resolve().parents[1]
EXERCISE = REPO / "exercises" / "00_foundations.py"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    info = build_bundle("00", out, root=REPO)
    return info, out


def test_bundle_contents(bundle):
    info, out = bundle
    assert info["exercise"] == "00_foundations" and info["points"] > 0
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        env = zf.read("autograder.env").decode()
        archive = [n for n in names if n.startswith("dist/")]
        data = zf.read(archive[0])
    assert set(names) == {
        "README.txt",
        "autograder.env",
        "run_autograder",
        "setup.sh",
        "dist/tinyodl-0.1.0.tar.gz",
    }
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755
    assert "EXERCISE=00_foundations" in env and "SANDBOX_USER=nobody" in env
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getnames()
    root = "tinyodl-0.1.0/"
    for needed in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "tinyodl/__init__.py"):
        assert root + needed in members
    assert any(m.startswith(root + "kernels/") and m.endswith(".pyx") for m in members)
    assert any(m.startswith(root + "tinyodl/datasets/") for m in members)
    # no exercise source (solutions), no build products
    assert not [m for m in members if "/exercises/" in m or m.endswith((".so", ".c", ".pyc"))]


def test_bundle_is_deterministic(bundle, tmp_path):
    _, out = bundle
    again = build_bundle("00_foundations", tmp_path / "again.zip", root=REPO)["zip"]
    assert again.read_bytes() == out.read_bytes()


def test_bad_requests(tmp_path):
    with pytest.raises(BundleError, match="no exercise '99'"):
        build_bundle("99", tmp_path / "x.zip", root=REPO)
    with pytest.raises(BundleError, match="did you mean 00_foundations"):
        resolve_exercise(REPO, "00_wrong")
    with pytest.raises(BundleError, match="not a wheel"):
        build_bundle("00", tmp_path / "x.zip", root=REPO, wheel=EXERCISE)
    assert not (tmp_path / "x.zip").exists()


def _gradescope_tree(tmp: Path, bundle_zip: Path, notebooks: dict[str, Path]) -> Path:
    root = tmp / "autograder"
    for folder in ("source", "submission", "results"):
        (root / folder).mkdir(parents=True)
    with zipfile.ZipFile(bundle_zip) as zf:
        zf.extractall(root / "source")
    for name in ("setup.sh", "run_autograder"):
        (root / "source" / name).chmod(0o755)
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    for name, path in notebooks.items():
        shutil.copy(path, root / "submission" / name)
    return root


def _run_autograder(root: Path) -> dict:
    env = dict(os.environ, TINYODL_AUTOGRADER_ROOT=str(root))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", str(root / "run_autograder")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return release_exercise(EXERCISE, tmp_path_factory.mktemp("release"))


@needs_bash
@pytest.mark.parametrize("version", ["solution", "student"])
def test_run_autograder_scores(bundle, released, tmp_path, version):
    """Full marks for the solution, zero for the student version, run as Gradescope does."""
    _, out = bundle
    # Gradescope keeps the student's file name; a renamed upload is graded all the same.
    name = "00_foundations.ipynb" if version == "solution" else "my homework.ipynb"
    root = _gradescope_tree(tmp_path, out, {name: released[version]})
    results = _run_autograder(root)
    maximum = results["extra_data"]["max_score"]
    assert maximum == bundle[0]["points"]
    if version == "solution":
        assert results["score"] == maximum
        assert all(t["status"] == "passed" for t in results["tests"])
    else:
        assert results["score"] == 0
        assert all(t["score"] == 0 for t in results["tests"])
    sandbox = results["extra_data"]["sandbox"]
    assert sandbox["user"] == ("nobody" if os.geteuid() == 0 else None)
    assert {"name", "score", "max_score", "output"} <= set(results["tests"][0])


@needs_bash
def test_run_autograder_without_a_notebook(bundle, tmp_path):
    _, out = bundle
    root = _gradescope_tree(tmp_path, out, {})
    (root / "submission" / "notes.txt").write_text("no notebook here")
    results = _run_autograder(root)
    assert results["score"] == 0 and results["tests"] == []
    assert "No .ipynb notebook" in results["output"]


@needs_bash
def test_run_autograder_prefers_the_exercise_notebook_and_private_tests(
    released, tmp_path, tmp_path_factory
):
    """With several notebooks the one named after the exercise is graded; --tests swaps in
    a private grader file (here one task of exercise 00's grader, renamed)."""
    from tinyodl.grading.graders import ex00

    private = tmp_path_factory.mktemp("private") / "private_tests_ex00.py"
    text = Path(ex00.__file__).read_text(encoding="utf-8")
    private.write_text(text.replace('"Task 2: linear_forward"', '"Task 2 (private)"'))
    out = build_bundle("00", tmp_path / "private.zip", root=REPO, tests=private)["zip"]
    with zipfile.ZipFile(out) as zf:
        assert "private_tests.py" in zf.namelist()
    notebooks = {"00_foundations.ipynb": released["solution"], "a_draft.ipynb": released["student"]}
    root = _gradescope_tree(tmp_path, out, notebooks)
    results = _run_autograder(root)
    assert results["score"] == results["extra_data"]["max_score"]  # the solution was graded
    assert "Task 2 (private)" in [t["name"] for t in results["tests"]]


@needs_bash
@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("TINYODL_TEST_SETUP_SH") != "1",
    reason="set TINYODL_TEST_SETUP_SH=1: setup.sh installs tinyodl's dependencies from PyPI "
    "and compiles its kernels (minutes)",
)
def test_setup_sh_installs_tinyodl_that_run_autograder_uses(bundle, released):
    """The whole Gradescope flow: ``setup.sh`` builds its own tinyodl from the bundle's source
    archive (a fresh virtual environment, outside this one), then ``run_autograder`` grades
    with that installed ``tinyodl``: full marks for the solution, zero for the student."""
    import tempfile

    _, out = bundle
    base = Path(tempfile.mkdtemp(prefix="tinyodl-gradescope-"))
    base.chmod(0o755)  # the sandbox user runs the installed Python
    try:
        venv, bin_dir = base / "opt-tinyodl", base / "bin"
        env = dict(os.environ, TINYODL_VENV=str(venv), TINYODL_BIN_DIR=str(bin_dir))
        env.pop("VIRTUAL_ENV", None)  # the system's python3, not this environment's
        paths = env.get("PATH", "").split(os.pathsep)
        env["PATH"] = os.pathsep.join(p for p in paths if not p.startswith(sys.prefix))
        for version in ("solution", "student"):
            root = _gradescope_tree(base / version, out, {"sub.ipynb": released[version]})
            env["TINYODL_AUTOGRADER_ROOT"] = str(root)
            if version == "solution":
                proc = subprocess.run(
                    ["bash", str(root / "source" / "setup.sh")],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=3600,
                    check=False,
                )
                assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
                assert (bin_dir / "tinyodl").resolve() == (venv / "bin" / "tinyodl").resolve()
            run_env = dict(env, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
            proc = subprocess.run(
                ["bash", str(root / "run_autograder")],
                env=run_env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            results = json.loads((root / "results" / "results.json").read_text("utf-8"))
            maximum = results["extra_data"]["max_score"]
            assert maximum > 0
            assert results["score"] == (maximum if version == "solution" else 0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
