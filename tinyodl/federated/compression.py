"""Update compression: fewer bytes up per client, at (nearly) the same accuracy.

Upload is the bottleneck of cross-device learning: a phone's uplink is slow and metered, and
in every round each selected client sends a model-sized update. Clients therefore send
*model differences* ``delta = w_k - w_t`` -- small numbers that compress far better than the
weights themselves -- and compress them:

=========================  ============================================  ==================
compressor                 payload                                       bytes for d values
=========================  ============================================  ==================
:class:`NoCompression`     float32 values                                4 d
:class:`Int8Quantization`  int8 ``q = round(delta / s)``, one float32    d + 4 per chunk
                           scale ``s = max|delta| / 127`` per chunk
:class:`TopK`              the k largest ``|delta_i|``: int32 index +    8 k
                           float32 value each
=========================  ============================================  ==================

Top-k alone drops most of every update; *error feedback* (Seide et al. 2014; Stich et al.
2018) keeps what was not sent in a residual ``e_k`` on the client and adds it to the next
update: ``v = delta + e_k``, send ``C(v)``, ``e_k <- v - decompress(C(v))``. The server does this
with ``FederatedServer(..., error_feedback=True)``; the residual is client state. Stochastic
rounding (``Int8Quantization(stochastic=True)``) makes the quantizer unbiased:
``E[decompress(q)] = delta``. Chapter 09.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Compressor",
    "Int8Quantization",
    "NoCompression",
    "TopK",
    "payload_bytes",
]

Payload = dict[str, np.ndarray]


def payload_bytes(payload: Payload) -> int:
    """Bytes on the wire: the sum of the arrays' ``nbytes`` (no framing overhead)."""
    return int(sum(a.nbytes for a in payload.values()))


def _as_vector(name: str, vec: np.ndarray) -> np.ndarray:
    vec = np.asarray(vec)
    if vec.ndim != 1 or vec.dtype.kind != "f":
        raise ValueError(f"{name}: expected a 1-D float vector, got {vec.dtype} {vec.shape}")
    return vec.astype(np.float32, copy=False)


class Compressor:
    """Base class: ``compress(vec, rng) -> payload``, ``decompress(payload, size) -> vec``."""

    def compress(self, vec: np.ndarray, rng: np.random.Generator) -> Payload:
        raise NotImplementedError

    def decompress(self, payload: Payload, size: int) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoCompression(Compressor):
    """Send the float32 values as they are (4 bytes each)."""

    def compress(self, vec, rng):
        return {"values": _as_vector("NoCompression", vec).copy()}

    def decompress(self, payload, size):
        return payload["values"].astype(np.float32, copy=True)


class Int8Quantization(Compressor):
    """Symmetric int8 quantization with one float32 scale per chunk of ``chunk_size`` values.

    ``s = max|v| / 127`` over the chunk, ``q = clip(round(v / s), -127, 127)`` (or
    ``floor(v / s + u)``, ``u ~ U[0, 1)``, with ``stochastic=True``), and ``v ~ q s``. The
    worst-case error per value is ``s / 2`` (``s`` with stochastic rounding).
    """

    def __init__(self, chunk_size: int | None = None, stochastic: bool = False) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"Int8Quantization: chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size, self.stochastic = chunk_size, stochastic

    def _chunks(self, size: int) -> int:
        return 1 if self.chunk_size is None else -(-size // self.chunk_size)

    def compress(self, vec, rng):
        v = _as_vector("Int8Quantization", vec)
        n_chunks = self._chunks(len(v))
        chunk = len(v) if self.chunk_size is None else self.chunk_size
        padded = np.zeros(n_chunks * chunk, dtype=np.float32)
        padded[: len(v)] = v
        blocks = padded.reshape(n_chunks, chunk)
        scale = (np.abs(blocks).max(axis=1) / 127.0).astype(np.float32)
        safe = np.where(scale > 0, scale, 1.0).astype(np.float32)[:, None]
        x = blocks / safe
        if self.stochastic:
            x = np.floor(x + rng.random(x.shape, dtype=np.float32))
        else:
            x = np.rint(x)
        q = np.clip(x, -127, 127).astype(np.int8).ravel()[: len(v)]
        return {"q": q, "scale": scale}

    def decompress(self, payload, size):
        q, scale = payload["q"], payload["scale"]
        chunk = size if self.chunk_size is None else self.chunk_size
        per_value = np.repeat(scale, chunk)[:size]
        return (q.astype(np.float32) * per_value).astype(np.float32)

    def __repr__(self) -> str:
        return f"Int8Quantization(chunk_size={self.chunk_size}, stochastic={self.stochastic})"


class TopK(Compressor):
    """Keep the ``k`` entries of largest magnitude (``k = ceil(fraction d)`` or given).

    Ties are broken towards the lower index; indices are sent sorted.
    """

    def __init__(self, fraction: float | None = None, k: int | None = None) -> None:
        if (fraction is None) == (k is None):
            raise ValueError("TopK: give exactly one of fraction and k")
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError(f"TopK: fraction must be in (0, 1], got {fraction}")
        if k is not None and k < 1:
            raise ValueError(f"TopK: k must be >= 1, got {k}")
        self.fraction, self.k = fraction, k

    def num_kept(self, size: int) -> int:
        k = self.k if self.k is not None else int(np.ceil(self.fraction * size))
        return max(1, min(k, size))

    def compress(self, vec, rng):
        v = _as_vector("TopK", vec)
        k = self.num_kept(len(v))
        order = np.argsort(-np.abs(v), kind="stable")[:k]
        idx = np.sort(order).astype(np.int32)
        return {"indices": idx, "values": v[idx].copy()}

    def decompress(self, payload, size):
        out = np.zeros(size, dtype=np.float32)
        out[payload["indices"]] = payload["values"]
        return out

    def __repr__(self) -> str:
        what = f"k={self.k}" if self.k is not None else f"fraction={self.fraction}"
        return f"TopK({what})"
