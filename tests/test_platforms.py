"""Running everywhere (issue 11): what a store URL means, where the default store
lives, and which Pythons and dependency versions are supported and tested."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from convtree import ConversationState, StorageError
from convtree.storage.urls import default_store_path, default_store_url, local_path, path_url
from convtree.sync import open_storage as open_sync

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest brings tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _save_one(url: str) -> None:
    with open_sync(url) as storage:
        state = ConversationState("c")
        state.add_message("user", "hi")
        storage.save_conversation(state)


# --- store URLs --------------------------------------------------------------------------


def test_sqlite_three_slashes_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's ``sqlite:///chats.db`` is ``./chats.db``, as in SQLAlchemy."""
    assert 'open_storage("sqlite:///chats.db")' in README
    monkeypatch.chdir(tmp_path)
    _save_one("sqlite:///chats.db")
    assert (tmp_path / "chats.db").is_file()
    _save_one("sqlite:///sub/dir/x.db")
    assert (tmp_path / "sub" / "dir" / "x.db").is_file()


def test_sqlite_four_slashes_is_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    url = f"sqlite:///{tmp_path / 'abs.db'}"
    assert url.startswith("sqlite:////")
    _save_one(url)
    assert (tmp_path / "abs.db").is_file()
    assert list(elsewhere.iterdir()) == []


def test_file_urls_are_standard_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``file:///dir`` is absolute (RFC 8089, ``Path.as_uri()``); ``file:dir`` is relative."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "absolute store"
    _save_one(store.as_uri())
    assert (store / "c.json").is_file()
    _save_one("file:relative")
    assert (tmp_path / "relative" / "c.json").is_file()
    assert local_path(f"file://localhost{store}", "file store") == store


def test_a_relative_path_is_fixed_when_the_store_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert local_path("sqlite:///x.db", "SQLite") == tmp_path / "x.db"
    assert local_path("sqlite:///~/x.db", "SQLite") == Path.home() / "x.db"


def test_an_old_absolute_three_slash_url_is_refused_with_both_spellings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite:///tmp/x.db`` meant ``/tmp/x.db`` before; it now reads as relative."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    legacy = f"sqlite://{tmp_path}/x.db"  # three slashes before an absolute path
    with pytest.raises(StorageError, match="ambiguous") as info:
        _save_one(legacy)
    assert f"sqlite:///{tmp_path}/x.db for the absolute path" in str(info.value)
    assert f"sqlite:///.{tmp_path}/x.db for the relative one" in str(info.value)
    assert list(cwd.iterdir()) == []
    _save_one(f"sqlite:///.{tmp_path}/x.db")  # ./ says "relative" on purpose
    assert (cwd / tmp_path.relative_to(tmp_path.anchor) / "x.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host/x.db", "sqlite:///relative/path or sqlite:////absolute/path"),
        ("sqlite://localhost/x.db", "sqlite:///relative/path or sqlite:////absolute/path"),
        ("sqlite:x.db", "sqlite:///relative/path or sqlite:////absolute/path"),
        ("sqlite:/x.db", "sqlite:///relative/path or sqlite:////absolute/path"),
        ("sqlite://", "has no path"),
        ("sqlite:///", "has no path"),
        ("sqlite:////", "has no path"),
        ("sqlite:///:memory:", "memory:// is the store in memory"),
        ("file://host/dir", "names the host 'host'"),
        ("file://", "has no path"),
        ("file:///", "has no path"),
    ],
)
def test_a_malformed_local_url_says_how_to_write_it(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=re.escape(message)):
        open_sync(url)


@pytest.mark.parametrize("scheme", ["sqlite", "file"])
@pytest.mark.parametrize("name", ["a b.db", "100%.db", "q?.db", "h#.db", "ü.db", "~x", "x;y"])
def test_path_url_reads_back_as_the_same_path(tmp_path: Path, scheme: str, name: str) -> None:
    path = tmp_path / name
    assert local_path(path_url(scheme, path), "store") == path


# --- the default store -------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="XDG is the Linux convention")
def test_the_default_store_follows_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVTREE_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "convtree" / "conversations.db"
    assert default_store_path() == expected
    assert local_path(default_store_url(), "SQLite") == expected
    done = subprocess.run(
        [sys.executable, "-m", "convtree.cli", "demo"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "CONVTREE_STORE"},
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert expected.is_file()


def test_convtree_store_wins_over_the_platform_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CONVTREE_STORE", "memory://mine")
    assert default_store_url() == "memory://mine"


# --- Pythons, dependencies, CI -----------------------------------------------------------


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _nox_pythons() -> list[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PYTHONS":
            return list(ast.literal_eval(node.value))
    raise AssertionError("noxfile.py defines no PYTHONS")


def test_the_readme_test_command_is_what_ci_runs() -> None:
    block = re.search(r"Run the tests.*?```bash\n(.+?)\n```", README, re.S)
    assert block is not None
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert block.group(1) in ci


def test_ci_and_nox_cover_every_supported_python() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    classified = sorted(
        c.rsplit(" ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert _nox_pythons() == SUPPORTED
    assert classified == SUPPORTED
    assert project["requires-python"] == f">={SUPPORTED[0]}"
    assert "nox" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.parametrize("python", SUPPORTED)
def test_dataknobs_data_is_allowed_on_every_python(python: str) -> None:
    """Exactly one ``dataknobs-data`` requirement applies on each supported Python."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    env = {"python_version": python, "python_full_version": f"{python}.0"}
    applying = [
        Requirement(line)
        for line in project["dependencies"]
        if Requirement(line).name == "dataknobs-data"
        and (Requirement(line).marker is None or Requirement(line).marker.evaluate(env))
    ]
    assert len(applying) == 1
    if python in ("3.10", "3.11"):  # dataknobs-data 0.4.13 is the last release for them
        assert applying[0].specifier.contains("0.4.13")


def test_the_installed_dataknobs_data_is_an_allowed_one() -> None:
    """What this environment resolved (a nox session's, CI's) is what pyproject allows."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    installed = version("dataknobs-data")
    for line in project["dependencies"]:
        req = Requirement(line)
        if req.name == "dataknobs-data" and (req.marker is None or req.marker.evaluate()):
            assert req.specifier.contains(installed, prereleases=True), (line, installed)
