"""The ``tinyodl`` command.

Sub-commands::

    tinyodl demo                          adapt the int8 mcunet_tiny on-device (the headline)
    tinyodl train                         train LeNet-5 from scratch on the shipped subset
    tinyodl grade NOTEBOOK [--json F]     grade a student's exercise notebook
    tinyodl exercises release --out DIR   write student (and solution) notebooks
    tinyodl exercises gradescope NN       a Gradescope autograder bundle (zip)
    tinyodl docs build --out DIR          the course as a website (docs extra)
    tinyodl bench NAME [--json F]         benchmarks (kernels, ...; see tinyodl bench -h)
    tinyodl info                          versions, backend, build details
    tinyodl export MODEL --format F --out FILE   ONNX / int8 ONNX / TFLite / C array (ch. 13)

Each sub-command imports its module only when it runs, so ``tinyodl --help`` is instant.
"""

from __future__ import annotations

import _thread
import argparse
import signal
import sys
import threading
from collections.abc import Sequence


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from tinyodl.demo import METHODS, DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo", help="adapt the int8 mcunet_tiny on-device to new digits inside 256 KB"
    )
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="default 1")
    p.add_argument("--epochs", type=_positive_int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument(
        "--per-class",
        type=_positive_int,
        default=d.per_class,
        help=f"labelled images per new class (default {d.per_class})",
    )
    p.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument(
        "--test-images", type=_positive_int, default=None, help="evaluate on the first N only"
    )
    p.add_argument("--jobs", type=_positive_int, default=2, help="processes (default 2)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="rows to run")
    p.add_argument("--json", default=None, help="write the table as JSON to this file")
    p.add_argument(
        "--out", default="tinyodl-demo", help="folder for the plots (demo.png, demo_energy.png)"
    )
    p.add_argument("--backend", choices=["numpy", "cython"], default=None)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train LeNet-5 from scratch on the shipped MNIST subset")
    p.add_argument("--epochs", type=_positive_int, default=None, help="training epochs")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="tinyodl-demo", help="folder for the plot and results")
    p.add_argument("--data", default=None, help="full MNIST folder instead of the shipped subset")
    p.add_argument("--backend", choices=["numpy", "cython"], default=None)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model: onnx, onnx-int8, tflite, c-array (ch. 13)")
    p.add_argument("model", help="model file (.npz of tinyodl.export.save_model or pretrained)")
    p.add_argument("--format", required=True, choices=("onnx", "onnx-int8", "tflite", "c-array"))
    p.add_argument("--out", required=True, help="output file (.onnx, .tflite, or .h/.cc stem)")
    p.add_argument("--input-shape", default=None, help="C,H,W of one input (default 1,28,28)")
    p.add_argument(
        "--calibration", type=_positive_int, default=256, help="int8: calibration images"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")


def _add_grade(sub: argparse._SubParsersAction) -> None:
    from tinyodl.grading.cli import add_grade_arguments

    p = sub.add_parser("grade", help="grade an exercise notebook (Gradescope results.json)")
    add_grade_arguments(p)


def _add_exercises(sub: argparse._SubParsersAction) -> None:
    from tinyodl.grading.cli import add_release_arguments

    p = sub.add_parser("exercises", help="instructor tools for the exercises")
    esub = p.add_subparsers(dest="exercises_command", required=True)
    r = esub.add_parser("release", help="write student (and solution) notebooks")
    add_release_arguments(r)
    from tinyodl.course.cli import add_gradescope_arguments

    g = esub.add_parser("gradescope", help="write a Gradescope autograder bundle (zip)")
    add_gradescope_arguments(g)


def _add_docs(sub: argparse._SubParsersAction) -> None:
    from tinyodl.course.cli import add_docs_arguments

    p = sub.add_parser("docs", help="the course as a website: build, serve, check")
    add_docs_arguments(p)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from tinyodl.bench import benchmark_names, load_benchmark
    from tinyodl.bench._common import add_common_arguments

    p = sub.add_parser("bench", help="benchmarks (ratios against baselines, same process)")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    for name in benchmark_names():
        module = load_benchmark(name)
        b = bsub.add_parser(name, help=module.HELP, description=module.__doc__)
        add_common_arguments(b)
        module.add_arguments(b)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyodl", description="tinyodl: learn on-device learning by building it."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_train(sub)
    _add_grade(sub)
    _add_exercises(sub)
    _add_docs(sub)
    _add_bench(sub)
    sub.add_parser("info", help="versions, active backend and build details")
    _add_export(sub)
    return parser


#: Exit code after Ctrl-C (SIGINT), as shells report a process killed by signal 2: 128 + 2.
EXIT_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in the ``tinyodl`` command.

    A subclass, raised by the command's own SIGINT handler: CPython remembers a *plain*
    ``KeyboardInterrupt`` that escaped code run through ``PyRun_String`` (some extension
    modules import that way) and then kills the process with SIGINT at exit, even after the
    exception was handled -- the exit code would be -2 instead of 130.
    """


class _CtrlC:
    """The command's Ctrl-C handling, installed by :func:`main` for one run.

    * SIGINT raises :class:`Interrupted`, which :func:`main` turns into one line and 130;
    * an interrupt that lands in a finalizer (``__del__``, a weakref or gc callback) cannot
      propagate -- Python would print "Exception ignored in ..." and carry on -- so the
      unraisable hook stays silent for it and delivers it again to the main thread a moment
      later, from a timer thread, once the finalizer has returned.
    """

    #: Seconds after which an interrupt swallowed by a finalizer is delivered again.
    REDELIVER_AFTER = 0.05

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self._previous_handler = None
        self._previous_hook = sys.unraisablehook
        self._timers: list[threading.Timer] = []

    def __enter__(self) -> _CtrlC:
        if self.active:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
            sys.unraisablehook = self._on_unraisable
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            for timer in self._timers:
                timer.cancel()
            signal.signal(signal.SIGINT, self._previous_handler)
            sys.unraisablehook = self._previous_hook

    @staticmethod
    def _on_sigint(signum, frame):
        raise Interrupted

    def _on_unraisable(self, unraisable) -> None:
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            timer = threading.Timer(self.REDELIVER_AFTER, _thread.interrupt_main, (signal.SIGINT,))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        else:
            self._previous_hook(unraisable)

    def quiet(self) -> None:
        """Ignore further Ctrl-C while the command reports the interruption and exits."""
        if self.active:
            for timer in self._timers:
                timer.cancel()
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tinyodl`` console script; returns the exit code.

    Errors a user can fix (a missing or corrupt data file, a diverging run, an unknown
    backend) are printed as one line, ``tinyodl: error: ...``, with exit code 1. Ctrl-C
    prints ``tinyodl: interrupted`` and exits with code 130, in every sub-command.
    """
    with _CtrlC() as ctrl_c:
        try:
            return _run(argv)
        except KeyboardInterrupt:
            ctrl_c.quiet()
            print("tinyodl: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tinyodl.backend import BackendError
    from tinyodl.checkpoint import CheckpointError
    from tinyodl.course.catalog import CourseError
    from tinyodl.course.execute import ExecutionError
    from tinyodl.course.gradescope import BundleError
    from tinyodl.course.site import SiteError
    from tinyodl.data import DataFormatError
    from tinyodl.grading.release import MarkerError
    from tinyodl.train import DivergenceError

    try:
        return _dispatch(args)
    except (
        OSError,
        BackendError,
        CheckpointError,
        DataFormatError,
        DivergenceError,
        MarkerError,
        CourseError,
        BundleError,
        SiteError,
        ExecutionError,
    ) as err:
        print(f"tinyodl: error: {err}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from tinyodl.demo import run_demo

        return run_demo(args)
    if args.command == "train":
        from tinyodl.scratch import run_train

        return run_train(args)
    if args.command == "grade":
        from tinyodl.grading import grade_main

        return grade_main(args)
    if args.command == "exercises":
        if args.exercises_command == "gradescope":
            from tinyodl.course.cli import gradescope_main

            return gradescope_main(args)
        from tinyodl.grading import release_main

        return release_main(args)
    if args.command == "docs":
        from tinyodl.course.cli import docs_main

        return docs_main(args)
    if args.command == "bench":
        from tinyodl.bench import load_benchmark

        return load_benchmark(args.bench_command).main(args)
    if args.command == "info":
        return _info()
    if args.command == "export":
        from tinyodl.export.cli import export_main

        try:
            return export_main(args)
        except ImportError as err:  # the optional extra is missing
            raise OSError(str(err)) from err
        except ValueError as err:
            print(f"tinyodl: error: {err}", file=sys.stderr)
            return 1
    raise AssertionError(args.command)  # argparse rejects unknown commands


def _info() -> int:
    import numpy as np

    from tinyodl import __version__, backend

    print(f"tinyodl {__version__}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"backends available: {', '.join(backend.available_backends())}")
    print(f"active backend: {backend.get_backend()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
