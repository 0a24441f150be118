"""Functions compiled from source when resilio is imported: the limiters' fast paths.

A rate limiter's in-memory decision is resilio's hottest path, and a Python
call costs about a tenth of it. So each algorithm writes its in-memory
decision once, as the source of a function body (`Algorithm.TAKE` and
`Algorithm.ADMIT`), and that source is compiled twice: into the algorithm's
``take_in`` and ``admit_in`` methods here, and, by ``resilio._inline``, into
a limiter's one-frame decisions, with the lock and the clock around it. One
algorithm, one text, no call between the bookkeeping and the arithmetic.

The compiled functions keep their source in `linecache`, so tracebacks and
debuggers show the lines they run.
"""

from __future__ import annotations

import linecache
import textwrap
from typing import Any

__all__ = ["compile_function", "indent"]


def indent(source: str, depth: int) -> str:
    """``source`` dedented, then indented by ``depth`` levels of four spaces."""
    return textwrap.indent(textwrap.dedent(source).strip("\n"), "    " * depth) + "\n"


def compile_function(source: str, name: str, label: str, namespace: dict[str, Any]) -> Any:
    """Compile ``source``, which defines a function ``name``, and return that function.

    Args:
        source: Python source defining ``name`` at its top level.
        name: The function to return.
        label: Names the source in tracebacks (``<resilio LABEL>``).
        namespace: The globals the function runs with.
    """
    filename = f"<resilio {label}>"
    code = compile(source, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope: dict[str, Any] = {}
    exec(code, namespace, scope)  # our own source, from the templates of resilio
    return scope[name]
