"""The test suite on every supported Python, each in a fresh virtualenv.

``nox`` runs all of them, ``nox -s tests-3.12`` one, ``nox -s tests-3.12 -- -x -k sync``
passes arguments to pytest. Each session installs ``.[test,docs,bench]`` with whatever
pip resolves on that Python (dataknobs-data 0.4.x on 3.10 and 3.11, see
``pyproject.toml`` for 3.12 and later), prints the dataknobs versions it got,
and runs pytest. ``.ci/run`` runs the sessions of the Pythons other than the
one of the README's test command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
"""Every Python convtree supports (``requires-python`` and the classifiers agree)."""

nox.options.sessions = ["tests"]

KNOWN_FAILURES: dict[str, list[str]] = {}
"""Tests deselected on one Python, each with the reason; the session says which."""
nox.options.error_on_missing_interpreters = True  # a Python that is not there fails, not skips


def _activate_pyenv_versions() -> None:
    """Let pyenv's ``python3.X`` shims find every installed Python, not only the global one.

    pyenv answers ``python3.12`` only for the versions it has selected; nox looks
    interpreters up by that name. The global version stays first, so ``python3``
    does not change. Nothing happens without pyenv or when ``PYENV_VERSION`` is set.
    """
    pyenv = shutil.which("pyenv")
    if pyenv is None or os.environ.get("PYENV_VERSION"):
        return

    def ask(*args: str) -> list[str]:
        done = subprocess.run([pyenv, *args], capture_output=True, text=True, check=False)
        return done.stdout.split()

    installed = [v for v in ask("versions", "--bare") if re.fullmatch(r"\d+\.\d+\.\d+", v)]
    selected = [v for v in ask("version-name") if v in installed]
    if installed:
        os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys([*selected, *installed]))


_activate_pyenv_versions()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install ``.[test,docs,bench]`` and run the test suite."""
    session.install("-e", ".[test,docs,bench]")
    session.run(
        "python",
        "-c",
        "import importlib.metadata as m, sys; print(sys.version.split()[0], *("
        "f'{p} {m.version(p)}' for p in ('dataknobs-data', 'dataknobs-structures')))",
    )
    known = KNOWN_FAILURES.get(str(session.python), [])
    if known:
        session.warn(f"deselected on {session.python} (KNOWN_FAILURES in noxfile.py): {known}")
    deselect = [arg for test in known for arg in ("--deselect", test)]
    session.run("python", "-m", "pytest", *deselect, *session.posargs)
