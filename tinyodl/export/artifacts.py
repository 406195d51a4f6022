"""Training artifacts (chapter 13): a checkpoint in the spirit of ONNX Runtime's.

ONNX Runtime's on-device training ships a *checkpoint* (parameters, optimizer state) beside
the training graph, and exports an inference model at the end. tinyodl's artifact is two
files written side by side:

* ``NAME.npz`` -- every array, stored (``np.savez``; read with ``allow_pickle=False``):
  ``model/<name>`` (parameters and buffers), ``optimizer/<key>`` (its ``state_dict``) and
  ``quant/<layer>.<array>`` (int8 weights, int32 biases, scales of a QuantizedModel);
* ``NAME.json`` -- the manifest: format name and version, the step, the generator state
  (``bit_generator.state``; 128-bit integers are exact in JSON), the quantization
  parameters (scales, zero points), and for every array its dtype, shape and SHA-256, plus
  the SHA-256 of the whole ``.npz``.

Both files are written atomically (temporary file, fsync, rename), the ``.npz`` first: a
crash leaves the previous pair or a new ``.npz`` that the old manifest's checksum rejects.
:func:`load_training_checkpoint` checks everything before returning anything, and every
problem -- a missing, truncated, tampered or mismatched file, an unknown version -- raises
:class:`~tinyodl.checkpoint.CheckpointError` naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.checkpoint import CheckpointError
from tinyodl.export._files import write_bytes_atomic

ARTIFACT_FORMAT = "tinyodl-training-checkpoint"
ARTIFACT_VERSION = 1
_GROUPS = ("model", "optimizer", "quant")


@dataclass
class TrainingCheckpoint:
    """What :func:`load_training_checkpoint` returns (plain arrays and JSON values)."""

    model: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    quant: dict[str, np.ndarray]
    step: int
    rng_state: dict[str, Any] | None
    quant_params: dict[str, Any] | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def restore(self, model: Any = None, optimizer: Any = None) -> np.random.Generator | None:
        """Load the state into ``model`` / ``optimizer`` (each all or nothing).

        Returns a generator in the saved state (or None when none was saved).
        """
        if model is not None:
            model.load_state_dict(self.model)
        if optimizer is not None:
            optimizer.load_state_dict(self.optimizer)
        if self.rng_state is None:
            return None
        rng = np.random.default_rng()
        rng.bit_generator.state = self.rng_state
        return rng


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _quant_state(qmodel: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {k: np.asarray(v) for k, v in qmodel.arrays().items()}
    params: dict[str, Any] = {"input": [qmodel.input.scale, qmodel.input.zero_point]}
    for name, conv in qmodel.named_convs():
        params[name] = {
            "input": [conv.input.scale, conv.input.zero_point],
            "output": [conv.output.scale, conv.output.zero_point],
            "rounding": conv.rounding,
        }
    return arrays, params


def save_training_checkpoint(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any = None,
    *,
    step: int = 0,
    rng: np.random.Generator | None = None,
    qmodel: Any = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``NAME.npz`` + ``NAME.json`` (see the module); returns both paths.

    Parameters
    ----------
    path : path
        ``NAME``, ``NAME.npz`` or ``NAME.json``.
    model : nn.Layer
        Its ``state_dict()`` (parameters and buffers).
    optimizer : tinyodl.nn optimizer, optional
    step : int
    rng : numpy.random.Generator, optional
        Its state is saved so training resumes with the same random stream.
    qmodel : QuantizedModel, optional
        Int8 arrays and quantization parameters.
    metadata : dict, optional
        Extra JSON values.
    """
    npz_path, json_path = _paths(path)
    groups = {
        "model": model.state_dict(),
        "optimizer": {} if optimizer is None else optimizer.state_dict(),
        "quant": {},
    }
    quant_params = None
    if qmodel is not None:
        groups["quant"], quant_params = _quant_state(qmodel)
    arrays = {f"{g}/{k}": np.asarray(v, order="C") for g, d in groups.items() for k, v in d.items()}
    for key, value in arrays.items():
        if value.dtype.hasobject:
            raise CheckpointError(f"save_training_checkpoint: {key} is an object array")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    manifest = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "step": int(step),
        "rng_state": None if rng is None else rng.bit_generator.state,
        "quant_params": quant_params,
        "metadata": metadata or {},
        "arrays_file": npz_path.name,
        "arrays_sha256": _sha256(data),
        "arrays": {
            k: {"dtype": v.dtype.str, "shape": list(v.shape), "sha256": _sha256(v.tobytes())}
            for k, v in arrays.items()
        },
    }
    manifest["manifest_sha256"] = _manifest_sha256(manifest)  # step, RNG state, parameters
    text = json.dumps(manifest, indent=1, sort_keys=True)
    write_bytes_atomic(npz_path, data)
    write_bytes_atomic(json_path, text.encode())
    return npz_path, json_path


def _manifest_sha256(manifest: dict[str, Any]) -> str:
    """Checksum of the manifest's content (everything but this checksum), canonical JSON: it
    covers the step, the generator state and the quantization parameters, which no array
    checksum does; whitespace changes do not alter it."""
    content = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return _sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())


def _read_manifest(json_path: Path) -> dict[str, Any]:
    fn = "load_training_checkpoint"
    if not json_path.is_file():
        raise CheckpointError(f"{fn}: {json_path}: no such manifest file")
    try:
        manifest = json.loads(json_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{fn}: {json_path}: not a JSON manifest ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise CheckpointError(f"{fn}: {json_path}: not a {ARTIFACT_FORMAT} manifest")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise CheckpointError(
            f"{fn}: {json_path}: manifest version {manifest.get('version')!r} is not "
            f"supported (this tinyodl reads version {ARTIFACT_VERSION})"
        )
    table = manifest.get("arrays")
    ok = isinstance(table, dict) and all(
        isinstance(k, str)
        and isinstance(v, dict)
        and isinstance(v.get("sha256"), str)
        and isinstance(v.get("dtype"), str)
        and isinstance(v.get("shape"), list)
        for k, v in table.items()
    )
    if not ok or not isinstance(manifest.get("arrays_sha256"), str):
        raise CheckpointError(f"{fn}: {json_path}: the manifest's array table is malformed")
    if not isinstance(manifest.get("step"), int) or isinstance(manifest.get("step"), bool):
        raise CheckpointError(f"{fn}: {json_path}: 'step' must be an integer")
    if manifest.get("manifest_sha256") != _manifest_sha256(manifest):
        raise CheckpointError(
            f"{fn}: {json_path}: the manifest was changed after it was written (its content "
            "does not match its manifest_sha256)"
        )
    return manifest


def _read_arrays(npz_path: Path, data: bytes) -> dict[str, np.ndarray]:
    fn = "load_training_checkpoint"
    arrays = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            for key in archive.files:
                arrays[key] = archive[key]
    except ValueError as err:
        raise CheckpointError(f"{fn}: {npz_path}: unreadable arrays ({err})") from err
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as err:
        raise CheckpointError(f"{fn}: {npz_path}: corrupt or truncated ({err})") from err
    return arrays


def load_training_checkpoint(path: str | os.PathLike) -> TrainingCheckpoint:
    """Read and validate the pair written by :func:`save_training_checkpoint`.

    Raises
    ------
    CheckpointError
        Naming the file: missing, truncated, not JSON / not an npz, unknown version, a
        checksum that does not match (tampered, or an ``.npz`` from another save), arrays
        missing or extra, a dtype or shape other than the manifest's.
    """
    fn = "load_training_checkpoint"
    npz_path, json_path = _paths(path)
    manifest = _read_manifest(json_path)
    if not npz_path.is_file():
        raise CheckpointError(f"{fn}: {npz_path}: no such file (named by {json_path.name})")
    data = npz_path.read_bytes()
    if _sha256(data) != manifest["arrays_sha256"]:
        raise CheckpointError(
            f"{fn}: {npz_path}: its SHA-256 does not match the manifest {json_path.name} "
            "(the file was changed, truncated, or belongs to another save)"
        )
    arrays = _read_arrays(npz_path, data)
    table = manifest["arrays"]
    if set(arrays) != set(table):
        missing, extra = sorted(set(table) - set(arrays)), sorted(set(arrays) - set(table))
        raise CheckpointError(f"{fn}: {npz_path}: missing arrays {missing}, extra {extra}")
    for key, info in table.items():
        a = arrays[key]
        if a.dtype.str != info["dtype"] or list(a.shape) != info["shape"]:
            raise CheckpointError(
                f"{fn}: {npz_path}: {key} is {a.dtype.str}{list(a.shape)}, the manifest says "
                f"{info['dtype']}{info['shape']}"
            )
        if _sha256(np.asarray(a, order="C").tobytes()) != info["sha256"]:
            raise CheckpointError(f"{fn}: {npz_path}: {key} does not match its checksum")
    groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in _GROUPS}
    for key, a in arrays.items():
        group, _, name = key.partition("/")
        if group not in groups or not name:
            raise CheckpointError(f"{fn}: {npz_path}: unexpected array name {key!r}")
        groups[group][name] = a
    return TrainingCheckpoint(
        model=groups["model"],
        optimizer=groups["optimizer"],
        quant=groups["quant"],
        step=manifest["step"],
        rng_state=manifest.get("rng_state"),
        quant_params=manifest.get("quant_params"),
        metadata=manifest.get("metadata") or {},
    )
