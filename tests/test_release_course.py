"""The instructor's release flow: ``tinyodl exercises release --only NN --check``, hidden tests
kept out of the student notebook, nbgrader metadata (validated by nbgrader itself when it is
installed, and against its documented schema always), and the self-check cells."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tinyodl.cli import main
from tinyodl.course.nbgrader import nbgrader_notebook, points_of
from tinyodl.course.release_check import hidden_lines
from tinyodl.grading.api import collect_tasks
from tinyodl.grading.engine import grader_module_name, load_grader
from tinyodl.grading.notebook import to_ipynb

REPO = Path(__file__).resolve().parents[1]
EX00 = REPO / "exercises" / "00_foundations.py"
TASKS = collect_tasks(load_grader(grader_module_name("00_foundations")))
TOTAL = sum(t.points for t in TASKS)


def _source_dir(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "exercises"
    folder.mkdir()
    (folder / EX00.name).write_text(text, encoding="utf-8")
    return folder


def test_release_only_with_check(tmp_path, capsys):
    out = tmp_path / "release"
    assert main(["exercises", "release", "--only", "00", "--check", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"00_foundations: ok: solution {TOTAL:g}/{TOTAL:g}, student 0/", printed)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "nbgrader/source/00_foundations/00_foundations.ipynb",
        "solution/00_foundations.ipynb",
        "student/00_foundations.ipynb",
    ]
    committed = REPO / "exercises" / "student" / "00_foundations.ipynb"
    assert (out / "student" / "00_foundations.ipynb").read_text() == committed.read_text()


def test_check_refuses_a_wrong_solution(tmp_path, capsys):
    text = EX00.read_text(encoding="utf-8")
    text += "\n# %%\ndef linear_forward(x, w, b):\n    return (x @ w.T + b).astype(np.float64)\n"
    source = _source_dir(tmp_path, text)
    out = tmp_path / "release"
    argv = ["exercises", "release", "--source", str(source), "--check", "--out", str(out)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "00_foundations: FAILED" in captured.out
    assert "checks that fail on the solution" in captured.out and "linear_forward" in captured.out
    assert "nothing written" in captured.err
    assert not out.exists()


def test_check_refuses_a_grader_that_passes_on_the_student_version(tmp_path, capsys):
    """A solution block whose markers were forgotten ships the answer: caught."""
    lines = EX00.read_text(encoding="utf-8").splitlines()
    begin = next(i for i, line in enumerate(lines) if line.strip() == "### BEGIN SOLUTION")
    end = next(i for i in range(begin, len(lines)) if lines[i].strip() == "### END SOLUTION")
    del lines[end], lines[begin]
    source = _source_dir(tmp_path, "\n".join(lines) + "\n")
    argv = ["exercises", "release", "--source", str(source), "--check", "--out", "unused"]
    assert main(argv) == 1
    assert "checks that pass on the student version" in capsys.readouterr().out


def test_hidden_tests_stay_out_of_the_student_release(tmp_path):
    secret = "assert relative_error(np.ones(3), np.ones(3)) < 1e-12  # SECRET-CHECK"
    text = EX00.read_text(encoding="utf-8") + (
        "\n# %%\n### grader: skip\n### BEGIN HIDDEN TESTS\n" + secret + "\n### END HIDDEN TESTS\n"
    )
    source = _source_dir(tmp_path, text)
    assert hidden_lines(text) == [secret]
    out = tmp_path / "release"
    argv = ["exercises", "release", "--source", str(source), "--check", "--out", str(out)]
    assert main(argv) == 0
    assert "SECRET-CHECK" not in (out / "student" / EX00.with_suffix(".ipynb").name).read_text()
    assert "SECRET-CHECK" in (out / "solution" / EX00.with_suffix(".ipynb").name).read_text()
    nbgrader = out / "nbgrader" / "source" / EX00.stem / EX00.with_suffix(".ipynb").name
    cells = json.loads(nbgrader.read_text())["cells"]
    hidden = [c for c in cells if "SECRET-CHECK" in "".join(c["source"])]
    assert hidden and hidden[0]["metadata"]["nbgrader"]["grade"] is True  # nbgrader's rule
    assert hidden[0]["metadata"]["nbgrader"]["points"] == 0


def test_only_names_an_unknown_exercise(tmp_path, capsys):
    assert main(["exercises", "release", "--only", "99", "--out", str(tmp_path)]) == 1
    assert "--only 99: no such exercise" in capsys.readouterr().err


# --------------------------------------------------------------------------- nbgrader

_KEYS = {"grade": bool, "grade_id": str, "locked": bool, "schema_version": int, "solution": bool}


@pytest.fixture(scope="module")
def nbgrader_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("nbgrader") / "00_foundations.ipynb"
    path.write_text(to_ipynb(nbgrader_notebook(EX00, TASKS)), encoding="utf-8")
    return path


def test_nbgrader_metadata_follows_the_documented_schema(nbgrader_source):
    """nbgrader's cell metadata, schema version 3 (its docs: "nbgrader metadata")."""
    data = json.loads(nbgrader_source.read_text())
    ids = [c["id"] for c in data["cells"]]
    assert len(set(ids)) == len(ids)
    grade_ids = []
    for cell in data["cells"]:
        meta = cell["metadata"].get("nbgrader")
        source = "".join(cell["source"])
        assert ("### BEGIN SOLUTION" in source) == bool(meta and meta["solution"]), source[:80]
        if meta is None:
            continue
        for key, kind in _KEYS.items():
            assert isinstance(meta[key], kind), (key, meta)
        assert meta["schema_version"] == 3 and meta["grade_id"]
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", meta["grade_id"])
        grade_ids.append(meta["grade_id"])
        if meta["grade"]:
            assert cell["cell_type"] == "code" and meta["locked"]
            assert isinstance(meta["points"], float) and meta["points"] >= 0
            assert source.startswith("### grader: skip")  # tinyodl's own grading skips it
    assert len(set(grade_ids)) == len(grade_ids)
    assert points_of(nbgrader_source) == TOTAL
    tests = [c for c in data["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
    assert [c["metadata"]["nbgrader"]["points"] for c in tests] == [t.points for t in TASKS]
    for cell, task in zip(tests, TASKS, strict=True):
        text = "".join(cell["source"])
        assert f'task_score("00_foundations", "{task.id}")' in text
        assert ("### BEGIN HIDDEN TESTS" in text) == task.hidden


def test_nbgrader_generates_the_assignment(nbgrader_source, tmp_path):
    """nbgrader itself validates the metadata and makes the student version."""
    pytest.importorskip("nbgrader")
    import nbformat
    from nbgrader.apps import NbGraderAPI
    from nbgrader.nbgraderformat import MetadataValidator
    from traitlets.config import Config

    MetadataValidator().validate_nb(nbformat.read(nbgrader_source, as_version=4))
    course = tmp_path / "course"
    shutil.copytree(nbgrader_source.parent, course / "source" / "00_foundations")
    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_assignments = [{"name": "00_foundations"}]
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    api = NbGraderAPI(config=config)
    result = api.generate_assignment("00_foundations", force=True)
    assert result["success"], result.get("log", "") + result.get("error", "")
    released = course / "release" / "00_foundations" / "00_foundations.ipynb"
    text = released.read_text()
    assert "### BEGIN SOLUTION" not in text and "raise NotImplementedError" in text
    hidden = [t for t in TASKS if t.hidden]
    for task in hidden:  # nbgrader removed the hidden tasks' code from the student version
        assert f'"{task.id}")' not in text
    cells = json.loads(text)["cells"]
    points = sum(
        c["metadata"]["nbgrader"]["points"]
        for c in cells
        if c["metadata"].get("nbgrader", {}).get("grade")
    )
    assert points == TOTAL


def test_self_check_cells_score_the_saved_notebook(tmp_path):
    """What an autograder-test cell evaluates to: the task's score (nbgrader's partial
    credit), full on the solution and zero on the stubs."""
    from tinyodl.course.selfcheck import NotebookNotFound, find_notebook, task_score
    from tinyodl.grading.release import release_exercise

    paths = release_exercise(EX00, tmp_path)
    task = next(t for t in TASKS if not t.hidden)
    scores = {}
    for version in ("solution", "student"):
        folder = Path(paths[version]).parent
        assert find_notebook("00_foundations", folder) == Path(paths[version])
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(folder)
            scores[version] = task_score("00_foundations", task.id)
    assert scores == {"solution": task.points, "student": 0.0}
    assert type(scores["solution"]) is float  # nbgrader parses the cell's text/plain
    with pytest.raises(NotebookNotFound, match="no 99_none.ipynb"):
        find_notebook("99_none", tmp_path)
    nbgrader_utils = pytest.importorskip("nbgrader.utils")
    output = {"output_type": "execute_result", "data": {"text/plain": repr(scores["solution"])}}
    assert nbgrader_utils.get_partial_grade(output, task.points) == task.points
