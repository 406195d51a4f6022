"""Time the grading engine on exercise 00 (solution notebook), in one process.

    python scripts/grading_timing.py [--repeat 3]

Prints, median of the repeats: grading the 8 tasks with a fresh session (the zygote's start
included) with jobs=1 and jobs=2; one student process forked from the zygote (start, load,
end); and, for comparison, what each task would cost without the zygote: a fresh
``python -I -S`` importing numpy. Wall-clock times on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinyodl.bench._common import machine_info
from tinyodl.grading import grade_notebook, release_exercise
from tinyodl.grading.process import StudentProcess
from tinyodl.grading.sandbox import Session, base_interpreter

REPO = Path(__file__).resolve().parents[1]


def _median(f, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    out = Path(tempfile.mkdtemp())
    solution = release_exercise(REPO / "exercises" / "00_foundations.py", out)["solution"]
    print(machine_info())
    for jobs in (1, 2):
        seconds = _median(lambda j=jobs: grade_notebook(solution, jobs=j), repeat)
        print(f"exercise 00 solution, 8 tasks, jobs={jobs}: {seconds:.2f} s")
    with Session() as session:

        def one_process():
            with StudentProcess(session, (), (), 60) as proc:
                proc.send({"op": "load", "cells": [], "allow": []}, None, time.monotonic() + 60)
                while proc.receive(time.monotonic() + 60)[0]["op"] != "loaded":
                    pass

        forked = _median(one_process, 5 * repeat)
    python = base_interpreter()
    site = str(Path(__import__("numpy").__file__).parents[1])
    code = f"import sys; sys.path.append({site!r}); import numpy"
    fresh = _median(lambda: subprocess.run([python, "-I", "-S", "-c", code], check=True), repeat)
    print(f"one student process from the zygote (start, load, end): {forked * 1000:.0f} ms")
    print(f"a fresh python -I -S importing numpy (no zygote): {fresh * 1000:.0f} ms")
    print(f"ratio: {fresh / forked:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
