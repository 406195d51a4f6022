"""Build script for tinyodl's compiled kernels.

Every ``kernels/<name>.pyx`` becomes the extension module ``tinyodl._kernels.<name>``.
Kernels are compiled with optimisation (``-O3``) and with OpenMP when the compiler
supports it; without OpenMP the ``prange`` loops simply run serially.
Set ``TINYODL_NO_OPENMP=1`` to force the serial build and ``TINYODL_PORTABLE=1`` to
build without ``-march=native``. The int8 kernels carry their own SIMD paths
(``kernels/simd/``: portable C, AVX2, AVX-512 VNNI, compiled with per-function target
attributes and chosen at run time), so a portable build still uses the CPU's best path.
For development, ``TINYODL_ONLY=conv,pool`` restricts the build to some kernels (see
``scripts/build_kernels.sh``).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


def compiler_accepts(flags: list[str], source: str) -> bool:
    """Return True if the C compiler builds and links ``source`` with ``flags``."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp) / "check.c"
        c_file.write_text(source)
        cmd = [cc, *flags, str(c_file), "-o", str(Path(tmp) / "check")]
        try:
            res = subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return res.returncode == 0


def compiler_supports_openmp() -> bool:
    """Check that a tiny OpenMP program compiles (``TINYODL_NO_OPENMP=1`` forces False)."""
    if os.environ.get("TINYODL_NO_OPENMP"):
        return False
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    return compiler_accepts(["-fopenmp"], src)


def arch_flags() -> list[str]:
    """``-march=native`` (the kernels are built where they run) unless TINYODL_PORTABLE=1."""
    if os.environ.get("TINYODL_PORTABLE"):
        return []
    if compiler_accepts(["-march=native"], "int main(void){return 0;}\n"):
        return ["-march=native"]
    return []


#: Modules that choose their SIMD path at run time (kernels/simd/): they are compiled for the
#: baseline ISA, so that each path holds exactly its own instructions (the portable path runs
#: on any x86-64 CPU, the AVX2 path on any AVX2 CPU) and the tests can run every path.
#: (gemm_steps, the teaching version, is built like the other modules: for this CPU.) Other
#: CPUs (ARM) have only the portable path, so there it is built for the machine too.
RUNTIME_DISPATCH = {"int8"} if platform.machine().lower() in ("x86_64", "amd64") else set()


def make_extensions() -> list[Extension]:
    openmp = compiler_supports_openmp()
    if not openmp:
        print("tinyodl: OpenMP not available; building serial kernels", file=sys.stderr)
    native = arch_flags()
    omp = ["-fopenmp"] if openmp else []
    only = set(filter(None, os.environ.get("TINYODL_ONLY", "").split(",")))
    headers = sorted(str(h.relative_to(HERE)) for h in (HERE / "kernels").rglob("*.h"))
    headers += sorted(str(h.relative_to(HERE)) for h in (HERE / "kernels").glob("*.pxd"))
    exts = []
    for pyx in sorted((HERE / "kernels").glob("*.pyx")):
        if only and pyx.stem not in only:
            continue
        exts.append(
            Extension(
                f"tinyodl._kernels.{pyx.stem}",
                [str(pyx.relative_to(HERE))],
                include_dirs=[np.get_include(), "kernels", "kernels/simd"],
                depends=headers,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=[
                    "-O3",
                    "-fno-math-errno",
                    *([] if pyx.stem in RUNTIME_DISPATCH else native),
                    *omp,
                ],
                extra_link_args=omp,
            )
        )
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "binding": True,
        },
    )


setup(ext_modules=make_extensions())
