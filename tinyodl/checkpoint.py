"""Training checkpoints: atomic ``.npz`` files that load without pickle.

A checkpoint is a plain numpy ``.npz`` archive. Every entry is a numeric (or fixed-width
string) array; the metadata (step, epoch, history, ...) is a JSON document stored as a
one-element string array under :data:`METADATA_KEY`. Because nothing is pickled, a
checkpoint from an untrusted source cannot run code when loaded
(``np.load(..., allow_pickle=False)``).

Writes are atomic: the archive goes to a temporary file in the same folder
(``.<name>.<pid>.<random>.tmp``), is flushed to disk (``fsync``) and then renamed over the
old file with :func:`os.replace`. A crash at any moment leaves either the old or the new
checkpoint, never a half-written one. The temporary file of a process that was killed
mid-write stays behind; the next save or load of the same path removes it (on POSIX, any
such file whose writing process no longer runs).
Chapter 13 (deployment: training checkpoints) and chapter 00 (training loop, resume).
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CheckpointError",
    "check_writable",
    "remove_stale_temp_files",
    "FORMAT",
    "METADATA_KEY",
    "load_checkpoint",
    "pack_state",
    "save_checkpoint",
    "unpack_state",
]

METADATA_KEY = "__metadata__"
FORMAT_KEY = "__format__"
#: Format tag stored in every checkpoint.
FORMAT = "tinyodl-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated, unsafe or not a tinyodl checkpoint."""


def _check_arrays(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    checked = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or key in (METADATA_KEY, FORMAT_KEY):
            raise CheckpointError(f"save_checkpoint: {path}: invalid or reserved key {key!r}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise CheckpointError(
                f"save_checkpoint: {path}: array {key!r} has dtype object; only numeric and "
                "string arrays can be stored (checkpoints are loaded without pickle)"
            )
        checked[key] = array
    return checked


def save_checkpoint(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, Any]
) -> None:
    """Atomically write ``arrays`` and JSON ``metadata`` to the ``.npz`` file ``path``.

    Parameters
    ----------
    path : str or path-like
        Destination; its folder must exist (:class:`CheckpointError` otherwise, naming the
        folder). The name is used as given (no ``.npz`` added).
    arrays : dict of str -> ndarray
        Numeric or string arrays (no object arrays).
    metadata : dict
        JSON-serialisable data (numbers, strings, lists, dicts, None).
    """
    path = Path(path)
    check_writable(path, "save_checkpoint")
    arrays = _check_arrays(path, arrays)
    try:
        text = json.dumps(metadata, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"save_checkpoint: {path}: metadata is not JSON: {err}") from err
    arrays[METADATA_KEY] = np.array([text])
    arrays[FORMAT_KEY] = np.array([FORMAT])
    remove_stale_temp_files(path)
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
        )
    except OSError as err:
        raise CheckpointError(
            f"save_checkpoint: {path}: cannot create a file in {path.parent} ({err.strerror})"
        ) from err
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def check_writable(path: str | os.PathLike, fn: str = "save_checkpoint") -> None:
    """Raise :class:`CheckpointError` unless a checkpoint can be written at ``path``:
    its folder exists and is writable and ``path`` is not a folder."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise CheckpointError(
            f"{fn}: {path}: the folder {str(folder)!r} does not exist; create it first "
            f"(Path({str(folder)!r}).mkdir(parents=True))"
        )
    if path.is_dir():
        raise CheckpointError(f"{fn}: {path} is a folder; give a file name for the checkpoint")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CheckpointError(f"{fn}: {path}: the folder {str(folder)!r} is not writable")


#: Age after which a temporary file counts as stale where process ids cannot be checked.
STALE_TEMP_SECONDS = 24 * 3600


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed saves of ``path`` left behind.

    A temporary file ``.<name>.<pid>.<random>.tmp`` is stale when process ``pid`` no longer
    runs (POSIX), or, on other systems, when it is older than :data:`STALE_TEMP_SECONDS`.
    Temporary files of saves still in progress (by this or another process) are kept.

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)\.[A-Za-z0-9_]+\.tmp")
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        match = pattern.fullmatch(tmp.name)
        if match is None:
            continue
        if os.name == "posix":
            stale = not _pid_running(int(match.group(1)))
        else:
            try:
                stale = time.time() - tmp.stat().st_mtime > STALE_TEMP_SECONDS
            except OSError:
                continue
        if stale:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    arrays : dict of str -> ndarray
    metadata : dict

    Raises
    ------
    CheckpointError
        Naming the file and the reason: missing, not an npz archive, truncated/corrupt,
        containing pickled objects, or lacking the tinyodl format tag or metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_checkpoint: {path}: no such file")
    remove_stale_temp_files(path)
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"load_checkpoint: {path}: a .npy array, not an .npz archive")
    if not magic.startswith(b"PK"):
        raise CheckpointError(
            f"load_checkpoint: {path}: not an .npz archive (starts with {magic!r}, not 'PK')"
        )
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                arrays[key] = archive[key]
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            reason = "contains pickled object arrays, refused (allow_pickle=False)"
        else:
            reason = f"not a valid npz archive ({err})"
        raise CheckpointError(f"load_checkpoint: {path}: {reason}") from err
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise CheckpointError(f"load_checkpoint: {path}: corrupt or truncated ({err})") from err
    return _split_metadata(path, arrays)


def _split_metadata(path: Path, arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
    for key in (FORMAT_KEY, METADATA_KEY):
        if key not in arrays:
            raise CheckpointError(
                f"load_checkpoint: {path}: missing {key!r}; not a tinyodl checkpoint"
            )
    tag = arrays.pop(FORMAT_KEY)
    if tag.shape != (1,) or str(tag[0]) != FORMAT:
        raise CheckpointError(f"load_checkpoint: {path}: format {tag!r}, expected {FORMAT!r}")
    raw = arrays.pop(METADATA_KEY)
    try:
        metadata = json.loads(str(raw[0]))
    except (IndexError, ValueError) as err:
        raise CheckpointError(f"load_checkpoint: {path}: metadata is not valid JSON") from err
    if not isinstance(metadata, dict):
        raise CheckpointError(
            f"load_checkpoint: {path}: metadata must be a JSON object, "
            f"got a {type(metadata).__name__}"
        )
    return arrays, metadata


# --- nested state (model / optimizer state_dicts) <-> flat arrays + JSON skeleton ---------


def pack_state(state: Any, prefix: str) -> tuple[dict[str, np.ndarray], Any]:
    """Flatten a nested state (dicts, lists, arrays, scalars) into arrays and a skeleton.

    Arrays are stored under ``f"{prefix}/{key path}"`` (e.g. ``"model/features.0.weight"``,
    ``"optim/velocity/3"``). The skeleton is JSON: ``{"dict": {...}}``, ``{"list": [...]}``,
    ``{"array": key}`` or ``{"value": scalar}``; :func:`unpack_state` inverts it.

    Parameters
    ----------
    state : dict, list, tuple, ndarray or scalar
        E.g. ``model.state_dict()`` or ``optimizer.state_dict()``.
    prefix : str
        Key prefix, e.g. ``"model"`` or ``"optim"``.

    Returns
    -------
    arrays : dict of str -> ndarray
    skeleton : JSON-serialisable
    """
    if isinstance(state, dict):
        arrays, skeleton = {}, {}
        for key, value in state.items():
            sub_arrays, skeleton[str(key)] = pack_state(value, f"{prefix}/{key}")
            arrays.update(sub_arrays)
        return arrays, {"dict": skeleton}
    if isinstance(state, list | tuple):
        arrays, items = {}, []
        for i, value in enumerate(state):
            sub_arrays, sub = pack_state(value, f"{prefix}/{i}")
            arrays.update(sub_arrays)
            items.append(sub)
        return arrays, {"list": items}
    if isinstance(state, np.ndarray):
        return {prefix: state.copy()}, {"array": prefix}
    if isinstance(state, np.generic):
        state = state.item()
    if state is None or isinstance(state, bool | int | float | str):
        return {}, {"value": state}
    raise CheckpointError(f"pack_state: {prefix}: cannot store a {type(state).__name__}")


def unpack_state(arrays: dict[str, np.ndarray], skeleton: Any, source: Any = None) -> Any:
    """Rebuild the nested state described by ``skeleton`` from ``arrays`` (see pack_state).

    A malformed skeleton or a missing array raises :class:`CheckpointError`, naming
    ``source`` (e.g. the checkpoint's path) when given.
    """
    where = "unpack_state" if source is None else f"unpack_state: {source}"
    if not isinstance(skeleton, dict) or len(skeleton) != 1:
        raise CheckpointError(
            f"{where}: malformed state skeleton {str(skeleton)[:80]!r}; expected an object "
            "with one key of 'dict', 'list', 'array', 'value'"
        )
    ((kind, sub),) = skeleton.items()
    if kind == "dict" and isinstance(sub, dict):
        return {key: unpack_state(arrays, value, source) for key, value in sub.items()}
    if kind == "list" and isinstance(sub, list):
        return [unpack_state(arrays, value, source) for value in sub]
    if kind == "array" and isinstance(sub, str):
        if sub not in arrays:
            raise CheckpointError(f"{where}: array {sub!r} is missing from the checkpoint")
        return arrays[sub]
    if kind == "value":
        return sub
    raise CheckpointError(f"{where}: malformed state skeleton entry {kind!r}: {str(sub)[:80]!r}")
