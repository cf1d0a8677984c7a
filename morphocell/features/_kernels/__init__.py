"""numba kernels, one module per feature family (``shape``, ``color``, ``texture``), and
``crop`` for what they share (the cell's box, an interleaved histogram).

Every kernel is ``@njit(cache=True, nogil=True)`` and only fills arrays that its Python
wrapper allocated; wrappers validate input, allocate and name outputs. Each kernel has a
test against a reference (scikit-image, mahotas or ``tests/reference.py``).
"""
