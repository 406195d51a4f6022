"""Pure-numpy reference kernels: the readable twin of every compiled kernel.

Each module mirrors ``tinyodl._kernels.<module>`` function for function; tests hold the
two equal. Read these next to the equations; use :mod:`tinyodl.ops` to run them.
"""
