"""The student's side of grading: run the notebook's cells, then answer calls with plain data.

This file runs in the sandboxed student process (a ``python -I -S`` interpreter forked from
the grading zygote, ``_supervisor.py``), copied next to ``_tinyodl_wire.py`` in the grading
session's runtime folder; it imports neither tinyodl nor the graders, which are not on this
process's path. Everything here is *untrusted* once the first cell has run: the student's
code can patch it freely, and the grader treats whatever arrives as plain data to check,
never as a verdict.

File descriptors: 3 requests from the grader, 4 answers to it, 5 stack dumps (faulthandler,
also on SIGUSR1 just before a timeout kill); 1 and 2 are not read by anyone in particular.

Requests (``op``): ``load`` (cells), ``call`` / ``new`` / ``method`` (a student function,
class or method with arguments), ``attr`` (an attribute or module-level variable). Answers:
``cell`` progress events while loading, ``loaded``, ``result`` and ``error``.
"""

from __future__ import annotations

import builtins
import faulthandler
import linecache
import os
import signal
import sys
import traceback
import types

import _tinyodl_wire as wire
import numpy as np

REQUESTS, ANSWERS, DUMPS = 3, 4, 5
_MAX_TEXT = 2000
_forbidden: list[str] = []


class _Unavailable:
    """Last entry of ``sys.meta_path``: a clear message for a tinyodl module that is not here
    (other missing modules get Python's usual error; the grader adds a hint to it)."""

    def __init__(self, allowed: list[str]):
        self.allowed = allowed

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] != "tinyodl":
            return None
        if name not in _forbidden:
            _forbidden.append(name)
        allowed = ", ".join(self.allowed) if self.allowed else "none"
        raise ModuleNotFoundError(
            f"{name} is not available to your code while grading (tinyodl modules this task "
            f"allows: {allowed}); write the code yourself",
            name=name,
        )


# -- messages ----------------------------------------------------------------------------------


def _read_exact(n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(REQUESTS, min(left, 1 << 20))
        if not chunk:
            os._exit(0)  # the grader is done with us
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive() -> tuple[dict, dict]:
    n_head, n_payload = wire.parse_prefix(_read_exact(wire.PREFIX_SIZE), 1 << 40)
    return wire.parse_body(_read_exact(n_head), _read_exact(n_payload), 1 << 40)


def _send(header: dict, arrays: dict | None = None) -> None:
    data = memoryview(wire.pack(header, arrays))
    while data:
        data = data[os.write(ANSWERS, data) :]


def _exception(exc: BaseException, kind: str = "raised") -> dict:
    frames = [[f.filename, f.lineno, f.name] for f in traceback.extract_tb(exc.__traceback__)]
    if isinstance(exc, SyntaxError) and exc.filename:
        frames.append([exc.filename, exc.lineno or 0, "<module>"])
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a student exception whose __str__ raises
        message = "<the exception's message could not be printed>"
    return {
        "op": "error",
        "kind": kind,
        "type": type(exc).__name__,
        "message": message[:_MAX_TEXT],
        "frames": frames[-40:],
        "forbidden": list(_forbidden),
    }


# -- loading the notebook ----------------------------------------------------------------------


def _run_cell(module: types.ModuleType, number: int, source: str) -> BaseException | None:
    filename = f"<cell {number}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    _send({"op": "cell", "n": number, "event": "start"})
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
        error = None
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a cell is an error too
        error = exc
    _send({"op": "cell", "n": number, "event": "done"})
    return error


def _load(cells: list) -> types.ModuleType:
    """Run the cells into ``__main__``, as Jupyter's "Run All" that goes on after errors.

    Cells that fail with ``NameError`` are run once more after all others (a cell placed
    above the one defining what it uses).
    """
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    module.__dict__["display"] = lambda *args, **kwargs: None  # Jupyter's display()
    sys.modules["__main__"] = module
    errors: dict[int, dict] = {}
    retry = []
    for number, source in cells:
        error = _run_cell(module, number, source)
        if error is not None:
            errors[number] = {"cell": number, **_exception(error)}
            if isinstance(error, NameError):
                retry.append((number, source))
    for number, source in retry:
        if _run_cell(module, number, source) is None:
            del errors[number]
    _send({"op": "loaded", "errors": [errors[k] for k in sorted(errors)], "forbidden": _forbidden})
    return module


# -- answering calls ---------------------------------------------------------------------------


class _Objects:
    """Objects kept in this process for the grader (``t.new``, ``keep=True``)."""

    def __init__(self):
        self.items: dict[int, object] = {}

    def keep(self, obj) -> dict:
        for key, item in self.items.items():
            if item is obj:
                return {"t": "ref", "id": key, "type": type(obj).__name__}
        key = len(self.items) + 1
        self.items[key] = obj
        return {"t": "ref", "id": key, "type": type(obj).__name__}

    def ref_of(self, obj):
        for key, item in self.items.items():
            if item is obj:
                return key, type(obj).__name__
        return None

    def get(self, key: int, type_name: str = ""):
        if key not in self.items:
            raise LookupError(f"no object #{key} in the student's process")
        return self.items[key]


def _make_function(source: str, names: dict):
    scope = {"np": np, "__builtins__": builtins, **names}
    filename = "<grader function>"
    try:
        code = compile(source, filename, "eval")
    except SyntaxError:
        code = None
    if code is not None:
        return eval(code, scope)
    before = set(scope)
    exec(compile(source, filename, "exec"), scope)
    made = [v for k, v in scope.items() if k not in before and callable(v)]
    if len(made) != 1:
        raise ValueError("Fn: the source must be a lambda or define exactly one function")
    return made[0]


def _aliases(value, args: list, kwargs: dict) -> dict:
    """Which parts of ``value`` are the very objects passed as arguments (in-place updates)."""
    targets = {id(a): f"args[{i}]" for i, a in enumerate(args) if type(a) in (np.ndarray, list)}
    targets.update(
        {id(v): f"kwargs[{k!r}]" for k, v in kwargs.items() if type(v) in (np.ndarray, list)}
    )
    found: dict[str, str] = {}

    def walk(item, path: str, depth: int) -> None:
        if id(item) in targets:
            found[path] = targets[id(item)]
        if depth < 3 and type(item) in (list, tuple):
            for i, sub in enumerate(item):
                walk(sub, f"{path}[{i}]", depth + 1)
        elif depth < 3 and type(item) is dict:
            for key, sub in item.items():
                walk(sub, f"{path}[{key!r}]", depth + 1)

    walk(value, "value", 0)
    return found


def _result(objects: _Objects, value, keep: bool, run: bool, args, kwargs, label: str) -> None:
    encoder = wire.Encoder(ref_of=objects.ref_of)
    header: dict = {"op": "result", "forbidden": list(_forbidden)}
    try:
        header["value"] = objects.keep(value) if keep else encoder.encode(value)
    except wire.NotPlainData as err:
        part = "" if err.where == "value" else f" ({err.where})"
        message = (
            f"{label} returned{part} a {err.type_name}, which the grader cannot read: return "
            "numpy arrays, numbers, strings, None, or lists, tuples and dicts of these"
        )
        _send(_error("not_plain", "TypeError", message))
        return
    if run:
        header["args"] = [_after(encoder, a, f"args[{i}]") for i, a in enumerate(args)]
        header["kwargs"] = {k: _after(encoder, v, f"kwargs[{k!r}]") for k, v in kwargs.items()}
        header["aliases"] = _aliases(value, args, kwargs)
    _send(header, encoder.arrays)


def _after(encoder, value, where: str):
    try:
        return encoder.encode(value, where)
    except wire.NotPlainData:
        return {"t": "same"}


def _error(kind: str, type_name: str, message: str) -> dict:
    return {"op": "error", "kind": kind, "type": type_name, "message": message, "frames": [],
            "forbidden": list(_forbidden)}  # fmt: skip


def _target(module: types.ModuleType, objects: _Objects, request: dict):
    """(callable, label) a call request names, or an error answer (dict) to send back."""
    op, name = request.get("op"), str(request.get("name"))
    if op in ("call", "new"):
        target = module.__dict__.get(name)
        what = "class" if op == "new" else "function"
        if target is None:
            return _error("missing", "NameError", f"the notebook does not define a {what} "
                          f"called {name}"), ""  # fmt: skip
        if not callable(target):
            return _error("missing", "TypeError", f"{name} is a {type(target).__name__}, "
                          f"not a {what}"), ""  # fmt: skip
        return target, f"{name}()"
    owner = objects.get(request["ref"])
    label = f"{type(owner).__name__}.{name}()"
    if not hasattr(owner, name):
        message = f"{type(owner).__name__} objects have no method {name}"
        return _error("missing", "AttributeError", message), ""
    return getattr(owner, name), label


def _serve(module: types.ModuleType) -> None:
    objects = _Objects()
    while True:
        request, arrays = _receive()
        op = request.get("op")
        try:
            if op == "attr":
                ref, name = request.get("ref"), str(request.get("name"))
                owner = module if ref is None else objects.get(ref)
                if not hasattr(owner, name):
                    where = "the notebook" if ref is None else f"{type(owner).__name__} objects"
                    _send(_error("missing", "AttributeError", f"{where} define no {name}"))
                    continue
                _result(objects, getattr(owner, name), False, False, [], {}, name)
                continue
            if op not in ("call", "new", "method"):
                raise ValueError(f"unknown request {op!r}")
            args = wire.decode(request.get("args", {"t": "list", "v": []}), arrays,
                               objects.get, _make_function)  # fmt: skip
            kwargs = wire.decode(request.get("kwargs", {"t": "dict", "v": []}), arrays,
                                 objects.get, _make_function)  # fmt: skip
            target, label = _target(module, objects, request)
        except BaseException as exc:  # noqa: BLE001
            _send(_exception(exc, "bad_request"))
            continue
        if isinstance(target, dict):
            _send(target)
            continue
        try:
            value = target(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the student's error, reported as such
            _send(_exception(exc))
            continue
        keep = op == "new" or bool(request.get("keep"))
        _result(objects, value, keep, bool(request.get("run")), args, kwargs, label)


def serve(extra_path: list[str]) -> None:
    """Answer the grader until it closes the request pipe (``extra_path``: the allowed
    tinyodl copy, added to ``sys.path``)."""
    sys.path.extend(p for p in extra_path if p not in sys.path)
    faulthandler.enable(file=DUMPS, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=DUMPS, all_threads=True, chain=False)
    request, _ = _receive()
    sys.meta_path.append(_Unavailable(request.get("allow", [])))
    module = _load([(n, src) for n, src in request["cells"]])
    _serve(module)
