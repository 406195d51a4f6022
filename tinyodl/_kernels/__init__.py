"""Compiled Cython kernels, built from ``kernels/*.pyx`` by ``setup.py``.

Each module here mirrors ``tinyodl.reference.<module>`` function for function.
"""
