"""Which implementation of the planner's inner loops runs: chosen once, here.

``compiled`` is the C module built from fill/_greedy.pyx (the greedy pass, link admission,
the radix argsort, the manifest scanner and writer) when the extensions are on and it was
built, else None; every caller then runs its numpy twin beside it (`placement._Greedy`,
`backbone._admit_numpy`, ...), which gives the same results (tests/fill run each case on
both). The switch is `_fastpath.EXTENSIONS`, the project's one reading of
``OCA_NO_EXTENSIONS``. ``IMPLEMENTATION`` says which loops run: ``"cython"`` or
``"python"``.

Callers read ``loops.compiled`` at call time (not ``from .loops import compiled``), so the
tests select the twins by setting this one attribute.
"""

from __future__ import annotations

from types import ModuleType

from _fastpath import EXTENSIONS

compiled: ModuleType | None = None
if EXTENSIONS:
    try:
        from . import _greedy as compiled
    except ModuleNotFoundError as e:
        # Not built (an install without a compiler): the twins. A module that was built
        # but fails to load is a broken install and fails here.
        if e.name != f"{__package__}._greedy":
            raise

IMPLEMENTATION = "python" if compiled is None else "cython"

__all__ = ["IMPLEMENTATION", "compiled"]
