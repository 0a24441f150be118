"""The public surface: `__all__` is the contract, and every public name is documented."""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import resilio
import resilio.chaos

EXPECTED = {
    "retry", "Retry", "backoff", "RetryBudget", "current_attempt",
    "timeout", "Timeout", "time_remaining",
    "CircuitBreaker", "CircuitState",
    "RateLimiter", "TokenBucket", "LeakyBucket", "FixedWindow", "SlidingWindow", "SlidingWindowLog",
    "AllOf", "LimitedCall", "Decision",
    "fallback", "Fallback", "Bulkhead", "AIMD", "Gradient", "hedge", "Hedge", "BulkheadFullError",
    "Pipeline", "Strategy",
    "Outcome", "Event", "EventKind", "GiveUpReason", "Listener", "EventLogger",
    "add_listener", "remove_listener",
    "Clock", "SystemClock",
    "ResilioError", "RejectedError", "CircuitOpenError", "RateLimitExceeded", "TimeoutExceeded",
}  # fmt: skip
PUBLIC_MODULES = [
    "resilio", "resilio.backoff", "resilio.testing", "resilio.chaos", "resilio.stores",
    "resilio.asgi", "resilio.httpx", "resilio.redis", "resilio.otel", "resilio.fastapi",
]  # fmt: skip


def test_all_is_exactly_the_contract() -> None:
    # Names may be added on purpose (update EXPECTED); none may vanish or leak by accident.
    assert set(resilio.__all__) >= EXPECTED, EXPECTED - set(resilio.__all__)
    assert len(resilio.__all__) == len(set(resilio.__all__))
    for name in resilio.__all__:
        assert hasattr(resilio, name), name


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (
                    inspect.isfunction(member) or isinstance(member, property)
                ):
                    continue
                assert inspect.getdoc(member), f"{module_name}.{name}.{attr} has no docstring"


def test_error_hierarchy() -> None:
    assert issubclass(resilio.RejectedError, resilio.ResilioError)
    assert issubclass(resilio.CircuitOpenError, resilio.RejectedError)
    assert issubclass(resilio.RateLimitExceeded, resilio.RejectedError)
    assert issubclass(resilio.TimeoutExceeded, resilio.ResilioError)
    assert issubclass(resilio.TimeoutExceeded, TimeoutError)
    assert resilio.RateLimitExceeded("x", retry_after=1.5).retry_after == 1.5


def test_importing_resilio_needs_no_optional_dependency() -> None:
    code = (
        "import sys, resilio, resilio.backoff, resilio.testing\n"
        "bad = [m for m in ('httpx', 'redis', 'opentelemetry') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


SANS_IO_ALLOWED = {
    "__future__", "abc", "bisect", "collections", "dataclasses", "enum", "functools", "heapq",
    "itertools", "math", "operator", "re", "textwrap", "typing",
    "linecache",  # _core.fastpath only stores the source it compiles there, for tracebacks
}  # fmt: skip


def test_core_is_sans_io() -> None:
    """`resilio._core` imports only pure standard-library modules and itself."""
    core = Path(resilio.__file__).parent / "_core"
    for path in sorted(core.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside _core
                    assert node.level == 1, f"{path.name} reaches outside _core"
                    continue
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= SANS_IO_ALLOWED, f"{path.name} imports {roots - SANS_IO_ALLOWED}"


NAMED: list[tuple[str, Callable[[Any], object]]] = [
    ("retry", lambda name: resilio.retry(on=OSError, name=name)),
    ("timeout", lambda name: resilio.timeout(1.0, name=name)),
    ("breaker", lambda name: resilio.CircuitBreaker(name=name)),
    ("bulkhead", lambda name: resilio.Bulkhead(max_concurrent=1, name=name)),
    ("fallback", lambda name: resilio.fallback(value=None, name=name)),
    ("hedge", lambda name: resilio.hedge(delay=0.1, name=name)),
    ("pipeline", lambda name: resilio.Pipeline(resilio.timeout(1.0), name=name)),
    ("limiter", lambda name: resilio.TokenBucket(rate=1, name=name)),
    ("chaos", lambda name: resilio.chaos.fault(injection_rate=0.5, error=OSError, name=name)),
]
# Where None means "a name of its own" (documented per class).
NONE_ALLOWED = {"breaker", "pipeline", "limiter"}


@pytest.mark.parametrize(("kind", "build"), NAMED, ids=[kind for kind, _ in NAMED])
def test_every_strategy_checks_its_name(kind: str, build: Callable[[Any], object]) -> None:
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        build(5)
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        build("")
    if kind in NONE_ALLOWED:
        build(None)
    else:
        with pytest.raises(TypeError, match="name must be a non-empty str"):
            build(None)
    assert getattr(build("mine"), "name", "mine") == "mine"
    # A str enum member names by its value (names key shared state), not its formatting.
    named = build(Name.MINE)
    if hasattr(named, "name"):
        assert type(named.name) is str
        assert named.name == "mine"


class Name(str, enum.Enum):
    MINE = "mine"
