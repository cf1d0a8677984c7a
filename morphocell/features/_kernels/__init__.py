"""numba kernels, one module per feature family (``shape``, ``color``, ``texture``).

Every kernel is ``@njit(cache=True, nogil=True)`` and only fills arrays that its Python
wrapper allocated; wrappers validate input, allocate and name outputs. Each kernel has a
test against a reference (scikit-image, mahotas or ``tests/reference.py``).
"""
