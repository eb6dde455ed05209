"""Bad input to storage: clear convtree errors, nothing stored lost."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convtree import ConversationState, StorageError, open_storage
from convtree.errors import DamagedRecordError, DamagedRecordWarning
from convtree.storage.urls import mask_url
from convtree.sync import open_storage as open_sync


def test_import_convtree_does_not_import_dataknobs_data() -> None:
    code = "import sys, convtree; print('dataknobs_data' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_scheme() -> None:
    with pytest.raises(StorageError, match="unknown storage URL scheme 'mongodb'"):
        asyncio.run(open_storage("mongodb://x")._open())


def test_unreachable_postgres_masks_the_password() -> None:
    url = "postgresql://me:s3cr%40t@127.0.0.1:1/db"
    with pytest.raises(StorageError) as info:
        asyncio.run(open_storage(url)._open())
    assert "s3cr" not in str(info.value)
    assert "***" in str(info.value)
    assert "s3cr" not in repr(open_storage(url))
    assert mask_url(url) == "postgresql://me:***@127.0.0.1:1/db"


def test_a_corrupt_record_file_raises_naming_it_and_is_kept(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    with open_sync(url) as storage:
        state = ConversationState("c")
        state.add_message("user", "hi")
        storage.save_conversation(state)
        other = ConversationState("d")
        storage.save_conversation(other)
    head = tmp_path / "c.json"
    text = head.read_bytes()
    head.write_bytes(text[: len(text) // 2])  # truncated
    with open_sync(url) as storage:
        with pytest.raises(DamagedRecordError, match=r"'c'.*c\.json: truncated JSON") as info:
            storage.load_conversation("c")
        assert (info.value.conversation_id, info.value.key) == ("c", "c")
        with pytest.warns(DamagedRecordWarning, match="'c'"):
            assert [s.conversation_id for s in storage.list_summaries()] == ["d"]
        assert storage.load_conversation("d") == other
        assert head.read_bytes() == text[: len(text) // 2]  # reading never changes it
        storage.save_conversation(state, overwrite=True)  # replacing it works
        assert storage.load_conversation("c") == state


def test_sync_facade_round_trip_and_repr(tmp_path: Path) -> None:
    with open_sync(f"sqlite:///{tmp_path}/x.db") as storage:
        state = ConversationState("s", metadata={"user_id": "u"})
        state.add_message("user", "hello")
        storage.save_conversation(state)
        assert storage.exists("s")
        assert storage.count_conversations({"user_id": "u"}) == 1
        assert [s.conversation_id for s in storage.list_summaries()] == ["s"]
        assert storage.list_conversations() == [state]
        assert "x.db" in repr(storage)
        assert storage.delete_conversation("s")


def test_a_newer_major_document_in_the_store_is_refused_and_kept(tmp_path: Path) -> None:
    """A conversation a future convtree wrote (schema 3.x): a clear error, never rewritten."""
    from convtree import SchemaVersionError

    url = f"sqlite:///{tmp_path}/x.db"

    async def run() -> None:
        async with open_storage(url) as storage:
            state = ConversationState("future", metadata={"user_id": "u"})
            state.add_message("user", "hi")
            await storage.save_conversation(state)
            stale = await storage.load_conversation("future")
            assert stale is not None
            # What a newer writer leaves: the next revision, a 3.0.0 document.
            records = storage.records  # type: ignore[attr-defined]
            fields = await records.read("future")
            head = json.loads(fields["head"])
            head["schema_version"] = "3.0.0"
            head["storage"]["revision"] += 1
            fields.update(revision=head["storage"]["revision"], head=json.dumps(head))
            await records.write("future", fields)
            before = json.dumps(fields)

            with pytest.raises(SchemaVersionError, match=r"'future'.*upgrade convtree"):
                await storage.load_conversation("future")
            stale.add_message("assistant", "hello")
            with pytest.raises(SchemaVersionError, match="upgrade convtree"):
                await storage.save_conversation(stale)  # a stale append would merge: refused
            assert json.dumps(await records.read("future")) == before
            [summary] = await storage.list_summaries({"user_id": "u"})
            assert summary.conversation_id == "future"  # still listed, metadata readable

    asyncio.run(run())


def test_a_missing_driver_names_the_extra_that_installs_it() -> None:
    code = (
        "import sys, asyncio\n"
        "sys.modules['asyncpg'] = None\n"
        "sys.modules['aioboto3'] = None\n"
        "from convtree import open_storage, StorageError\n"
        "for url in ['postgresql://u:pw@h/db', 's3://bucket/p']:\n"
        "    try:\n"
        "        asyncio.run(open_storage(url)._open())\n"
        "    except StorageError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "'postgresql://u:***@h/db' needs asyncpg: pip install 'convtree[postgres]'",
        "'s3://bucket/p' needs aioboto3: pip install 'convtree[s3]'",
    ]


def test_a_broken_driver_is_reported_as_broken_not_missing(tmp_path: Path) -> None:
    """An installed driver that fails to import (an incompatible version, a missing
    compiled part) is named with its own error; installing the extra would not help."""
    fake = tmp_path / "asyncpg"
    fake.mkdir()
    (fake / "__init__.py").write_text("from asyncpg.protocol import protocol\n")
    (fake / "protocol").mkdir()
    (fake / "protocol" / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'Record' from 'asyncpg.protocol'\")\n"
    )
    code = (
        "import asyncio\n"
        "from convtree import open_storage, StorageError\n"
        "try:\n"
        "    asyncio.run(open_storage('postgresql://u:pw@h/db')._open())\n"
        "except StorageError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    message = out.stdout.strip()
    assert message.startswith("the backend for postgresql:// cannot be loaded: ImportError: ")
    assert "cannot import name 'Record'" in message
    assert "pip install" not in message
