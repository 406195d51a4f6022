"""The tinyodl modules a task lets student code import, and their tinyodl import closure.

A grader may allow student code to use parts of tinyodl (``ALLOW = ("tinyodl.nn",)`` while
students write pruning). The student's process then gets a *copy* of exactly those modules
plus every tinyodl module they import, found statically:

* ``import tinyodl.x`` / ``from tinyodl.x import y`` / relative imports, anywhere in the file
  (lazy imports inside functions included), where ``y`` counts when it is a submodule;
* string constants naming a tinyodl module or package (``"tinyodl._kernels"`` in
  ``importlib.import_module(f"tinyodl._kernels.{name}")``): the whole package, compiled
  extension modules included;
* the parent packages' ``__init__.py`` of every module, and their closures;
* the data folders listed in :data:`DATA` (read through ``__file__``).

``tinyodl.grading`` is never copied, nor any module a grader lists in ``DENY`` (the chapter
module the exercise asks students to write): a closure that reaches one is a grader bug and
raises :class:`ClosureError` when the grader is loaded.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import tinyodl

PACKAGE_DIR = Path(tinyodl.__file__).resolve().parent
NEVER = ("tinyodl.grading",)
#: Data folders (relative to the package) that modules read through ``__file__``.
DATA = {"tinyodl.data.mnist": ("datasets",)}
_NAME = re.compile(r"^tinyodl(\.[A-Za-z_][A-Za-z0-9_]*)+\.?$")
_EXTENSIONS = (".py", ".so", ".pyd")


class ClosureError(ValueError):
    """An allowed module is unknown or its import closure reaches a module that must stay out."""


def _module_path(name: str) -> Path | None:
    """Source file of a tinyodl module or package (``__init__.py``), or None."""
    parts = name.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts) if parts else PACKAGE_DIR
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _extension_files(name: str) -> list[Path]:
    parts = name.split(".")[1:]
    if not parts:
        return []
    parent = PACKAGE_DIR.joinpath(*parts[:-1])
    return sorted(parent.glob(parts[-1] + ".*.so")) + sorted(parent.glob(parts[-1] + ".*.pyd"))


def _is_package(name: str) -> bool:
    path = _module_path(name)
    return path is not None and path.name == "__init__.py"


def _exists(name: str) -> bool:
    return _module_path(name) is not None or bool(_extension_files(name))


def _package_modules(name: str) -> list[str]:
    """Every module of a package (one level), compiled ones included."""
    folder = _module_path(name).parent
    names = {name}
    for path in folder.iterdir():
        stem = path.name.split(".")[0]
        if path.suffix in _EXTENSIONS and stem != "__init__" and stem.isidentifier():
            names.add(f"{name}.{stem}")
        elif path.is_dir() and (path / "__init__.py").is_file():
            names.add(f"{name}.{path.name}")
    return sorted(names)


def _imports(name: str) -> set[str]:
    """tinyodl modules named by the imports and string constants of one module."""
    path = _module_path(name)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and _NAME.match(node.value):
                target = node.value.rstrip(".")
                found.update(_package_modules(target) if _is_package(target) else [target])
    return {m for m in found if m.split(".")[0] == "tinyodl" and _exists(m)}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(allow: tuple[str, ...] | list[str], deny: tuple[str, ...] = ()) -> list[str]:
    """Sorted module names student code needs to import ``allow``.

    Raises
    ------
    ClosureError
        When an allowed name is not a tinyodl module, or the closure reaches
        ``tinyodl.grading`` or a module in ``deny`` (the message names the import chain).
    """
    if not allow:
        return []
    todo: list[tuple[str, str]] = []
    for name in allow:
        if name.split(".")[0] != "tinyodl" or not _exists(name):
            raise ClosureError(f"ALLOW names {name!r}, which is not a tinyodl module")
        todo.append((name, name))
    seen: dict[str, str] = {}
    while todo:
        name, chain = todo.pop()
        if name in seen:
            continue
        for bad in NEVER + tuple(deny):
            if name == bad or name.startswith(bad + "."):
                raise ClosureError(
                    f"student code may not import {bad}, but the allowed modules need it: {chain}"
                )
        seen[name] = chain
        for other in sorted(_imports(name)) + _parents(name):
            if other not in seen:
                todo.append((other, f"{chain} -> {other}"))
    return sorted(seen)


def third_party(modules: list[str]) -> list[str]:
    """Packages outside tinyodl and the standard library that ``modules`` import at load time
    (module-level imports only: what must be importable for ``import`` to succeed)."""
    found: set[str] = set()
    for name in modules:
        path = _module_path(name)
        if path is None:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
    return sorted(found - stdlib - {"tinyodl"})


def copy_modules(modules: list[str], target: Path) -> Path:
    """Copy ``modules`` (their sources, compiled extensions and data) under ``target/tinyodl``."""
    for name in modules:
        files = _extension_files(name)
        path = _module_path(name)
        if path is not None:
            files.append(path)
        for extra in DATA.get(name, ()):
            src = PACKAGE_DIR / extra
            dst = target / "tinyodl" / extra
            if src.is_dir() and not dst.exists():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        for file in files:
            dst = target / "tinyodl" / file.relative_to(PACKAGE_DIR)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, dst)
    return target
