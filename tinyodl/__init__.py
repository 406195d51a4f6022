"""tinyodl: learn on-device learning by building it.

A readable numpy reference implementation of the techniques that let a model train on a
phone, a sensor or a microcontroller, with Cython kernels behind the same API where speed
matters. Start with chapter 00 (``chapters/00_foundations.ipynb``).
"""

from tinyodl.backend import get_backend, set_backend, use_backend

__version__ = "0.1.0"
__all__ = ["get_backend", "set_backend", "use_backend", "__version__"]
