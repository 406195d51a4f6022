"""Exceptions raised by :mod:`tinyodl.nn`, with messages that name the layer at fault.

Every error is a subclass of a builtin (``ValueError``, ``TypeError``, ``RuntimeError``,
``KeyError``), so ``except ValueError`` keeps working in student code.
"""

from __future__ import annotations


class LayerShapeError(ValueError):
    """An input or gradient has a shape the layer cannot take."""


class LayerDtypeError(TypeError):
    """An input is not a real-valued numeric array."""


class BackwardError(RuntimeError):
    """``backward`` was called without a matching ``forward``."""


class PerExampleGradientError(BackwardError):
    """``backward(per_example=True)`` through a layer whose gradient mixes the examples
    (a batchnorm in training mode): per-example gradients would be wrong, so they are refused."""


class DtypeWarning(UserWarning):
    """An input was cast to the layer's float type with a loss of precision (float64 data
    given to a float32 model). Issued once per layer; filter it with ``warnings`` if wanted."""


class _ReadableKeyError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message; keep it readable
        return str(self.args[0]) if self.args else ""


class StateDictError(_ReadableKeyError):
    """A state dict does not match the model (missing/unexpected keys or wrong shapes)."""


class LayerNotFoundError(_ReadableKeyError):
    """No layer (or parameter) has the requested name."""
