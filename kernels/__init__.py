"""Fast paths for the hot loops (Gram matrices, patch matching) beside their torch references.

Each kernel has a stateless functional reference here that runs anywhere and is the test oracle;
GPU implementations are chosen when CuPy and a GPU are present and are tested against it.
"""

from ._gram import gram

__all__ = ["gram"]
