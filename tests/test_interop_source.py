"""The shared streaming layer of the interop formats: sources, skipping, atomic writes."""

from __future__ import annotations

import io
import json
import re
import struct
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState, FormatError
from convtree._json import MAX_DEPTH
from convtree.interop._source import (
    Reader,
    default_member_filter,
    iter_objects,
    open_dest,
    write_array,
)


def convert(obj: dict[str, Any]) -> ConversationState:
    """A tiny format: ``{"id", "texts": [...]}``; ``bad`` names a broken field."""
    if "bad" in obj:
        raise FormatError("this field is broken", path=f"mapping.{obj['bad']}", node_id="n1")
    state = ConversationState(obj["id"])  # a missing id is a KeyError: a converter bug
    for text in obj.get("texts", []):
        state.add_message("user", text)
    return state


def conv(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"c{i}", "texts": [f"hello {i}", f"again {i}"], **extra}


def dump(objs: Any) -> bytes:
    return json.dumps(objs).encode()


def ids(reader: Reader) -> list[str]:
    return [state.conversation_id for state in reader]


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


# ------------------------------------------------------------------ sources


def test_single_object_file(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_bytes(json.dumps(conv(7), indent=2).encode())
    assert [(f, i, o["id"]) for f, i, o in iter_objects(path)] == [(str(path), 0, "c7")]
    with Reader(path, convert) as reader:
        states = list(reader)
    assert [s.conversation_id for s in states] == ["c7"]
    assert [m.content for m in states[0].get_current_messages()] == ["hello 7", "again 7"]
    assert reader.count == 1
    assert reader.skipped == []


def test_array_file_with_every_path_type(tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_bytes(dump([conv(i) for i in range(5)]))
    expected = [f"c{i}" for i in range(5)]
    for source in (path, str(path), bytes(path)):
        assert ids(Reader(source, convert)) == expected
    assert [i for _, i, _ in iter_objects(path)] == [0, 1, 2, 3, 4]


def test_numbers_are_ints_and_floats(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_bytes(b'[{"id": "c", "t": 1760503067.617115, "n": 3, "big": 9223372036854775807}]')
    [(_, _, obj)] = iter_objects(path)
    assert obj["t"] == 1760503067.617115
    assert type(obj["t"]) is float
    assert type(obj["n"]) is int
    assert obj["big"] == 2**63 - 1
    path.write_bytes(b'[{"id": "c"}, {"id": "d", "big": 123456789012345678901}]')
    reader = Reader(path, convert)
    assert ids(reader) == ["c"]
    assert "integer beyond 64 bits" in str(reader.skipped[0].error)


def test_byte_order_mark_and_leading_space(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf \n\t" + dump([conv(1)]))
    assert ids(Reader(path, convert)) == ["c1"]


def test_empty_array_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(b"[ ]\n")
    reader = Reader(path, convert)
    assert list(reader) == []
    assert reader.skipped == []
    assert reader.count == 0


def test_zip_with_conversations_json_ignores_account_files(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "export.zip",
        {
            "user.json": dump({"id": "user-1", "email": "a@example.com"}),
            "message_feedback.json": dump([{"id": "f1", "rating": "thumbsUp"}]),
            "conversations.json": dump([conv(1), conv(2)]),
            "chat.html": b"<html></html>",
            "file-abc123.png": b"\x89PNG\r\n",
            "dalle-generations/file-x.webp": b"RIFF",
        },
    )
    reader = Reader(archive, convert)
    assert ids(reader) == ["c1", "c2"]
    assert reader.skipped == []
    assert {f for f, _, _ in iter_objects(archive)} == {"conversations.json"}


def test_zip_of_shards_in_natural_order(tmp_path: Path) -> None:
    members = {
        f"conversations-{n:03d}.json": dump([conv(n * 10), conv(n * 10 + 1)]) for n in (0, 1)
    }
    members["conversations-2.json"] = dump([conv(20)])
    members["conversations-10.json"] = dump([conv(100)])
    members["user.json"] = dump({"id": "u"})
    members["model_comparisons.json"] = dump([{"id": "m"}])
    archive = make_zip(tmp_path / "shards.zip", members)
    seen = list(iter_objects(archive))
    assert [(f, i) for f, i, _ in seen] == [
        ("conversations-000.json", 0),
        ("conversations-000.json", 1),
        ("conversations-001.json", 2),
        ("conversations-001.json", 3),
        ("conversations-2.json", 4),
        ("conversations-10.json", 5),
    ]
    assert ids(Reader(archive, convert)) == ["c0", "c1", "c10", "c11", "c20", "c100"]


def test_directory_of_shards(tmp_path: Path) -> None:
    root = tmp_path / "export"
    (root / "__MACOSX").mkdir(parents=True)
    (root / "conversations-001.json").write_bytes(dump([conv(3)]))
    (root / "conversations-000.json").write_bytes(dump([conv(1), conv(2)]))
    (root / "user.json").write_bytes(dump({"id": "u"}))
    (root / "._conversations-000.json").write_bytes(b"\x00\x05\x16\x07")
    (root / "__MACOSX" / "conversations-000.json").write_bytes(b"junk")
    (root / "file-1.png").write_bytes(b"\x89PNG")
    (root / "conversations-10.json").write_bytes(dump([conv(10)]))
    (root / "conversations-2.json").write_bytes(dump([conv(4)]))
    reader = Reader(root, convert)
    assert ids(reader) == ["c1", "c2", "c3", "c4", "c10"]
    assert reader.skipped == []
    only = Reader(root, convert, member_filter=lambda name: name.endswith(("0.json", "2.json")))
    assert ids(only) == ["c1", "c2", "c4", "c10"]


def test_directory_without_conversation_names_reads_every_json(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_bytes(dump(conv(2)))
    (tmp_path / "a.json").write_bytes(dump(conv(1)))
    (tmp_path / "notes.txt").write_bytes(b"not read")
    assert ids(Reader(tmp_path, convert)) == ["c1", "c2"]


def test_member_filter_chooses_files(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "x.zip",
        {"chats/a.json": dump([conv(1)]), "chats/b.json": dump([conv(2)]), "other.json": b"{"},
    )
    reader = Reader(archive, convert, member_filter=lambda name: name.startswith("chats/"))
    assert ids(reader) == ["c1", "c2"]
    assert reader.skipped == []


def test_default_member_filter() -> None:
    names = ["user.json", "x/conversations.json", "a.json", ".hidden.json", "img.png"]
    assert default_member_filter(names) == ["x/conversations.json"]
    assert default_member_filter(["b.json", "a.JSON", "__MACOSX/a.json"]) == ["a.JSON", "b.json"]


def test_open_binary_files(tmp_path: Path) -> None:
    data = dump([conv(1), conv(2)])
    assert ids(Reader(io.BytesIO(data), convert)) == ["c1", "c2"]
    path = tmp_path / "c.json"
    path.write_bytes(data)
    with path.open("rb") as f:
        assert ids(Reader(f, convert)) == ["c1", "c2"]
        assert not f.closed  # the caller's file stays open
    archive = make_zip(tmp_path / "e.zip", {"conversations.json": data})
    with archive.open("rb") as f:
        assert ids(Reader(f, convert)) == ["c1", "c2"]
        assert not f.closed


def test_unbuffered_stream_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(dump([conv(1)]))
    with path.open("rb", buffering=0) as raw:
        assert ids(Reader(raw, convert)) == ["c1"]


def test_source_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="give a path or an open binary file"):
        list(Reader(["not", "a", "source"], convert))  # type: ignore[arg-type]
    reader = Reader(tmp_path / "missing.json", convert)
    assert list(reader) == []
    [skipped] = reader.skipped
    assert "missing.json" in str(skipped.error)
    with pytest.raises(FormatError, match=r"cannot read .*missing\.json"):
        list(Reader(tmp_path / "missing.json", convert, errors="raise"))


# ---------------------------------------------------------------- bad input


def test_truncated_file_yields_what_precedes_the_break(tmp_path: Path) -> None:
    data = dump([conv(i) for i in range(4)])
    cut = data.index(b'{"id": "c3"') + 12
    path = tmp_path / "conversations.json"
    path.write_bytes(data[:cut])
    reader = Reader(path, convert)
    assert ids(reader) == ["c0", "c1", "c2"]
    [skipped] = reader.skipped
    assert skipped.index == 3
    assert skipped.file == str(path)
    assert skipped.source_id is None
    assert f"cut short: the JSON ends at byte {cut}" in str(skipped.error)
    assert skipped.error.path == str(path)

    raising = Reader(path, convert, errors="raise")
    assert [next(raising).conversation_id for _ in range(3)] == ["c0", "c1", "c2"]
    with pytest.raises(FormatError, match=f"ends at byte {cut}"):
        next(raising)

    objects = iter_objects(path)
    assert [next(objects)[2]["id"] for _ in range(3)] == ["c0", "c1", "c2"]
    with pytest.raises(FormatError, match="cut short"):
        next(objects)


def test_truncated_shard_does_not_stop_the_next_one(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "e.zip",
        {
            "conversations-000.json": dump([conv(1), conv(2)])[:-20],
            "conversations-001.json": dump([conv(3)]),
        },
    )
    reader = Reader(archive, convert)
    assert ids(reader) == ["c1", "c3"]
    [skipped] = reader.skipped
    assert (skipped.index, skipped.file) == (1, "conversations-000.json")


def test_garbage_in_the_middle_names_the_byte_range(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b'[{"id": "c1"}, {"id": nope}, {"id": "c3"}]')
    reader = Reader(path, convert)
    assert ids(reader) == ["c1"]
    [skipped] = reader.skipped
    assert "not valid JSON between bytes 0 and 42" in str(skipped.error)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b"\n  hello, I am text")
    reader = Reader(path, convert)
    assert list(reader) == []
    [skipped] = reader.skipped
    assert "not a JSON object or array: byte 3 is 'h'" in str(skipped.error)
    for data, message in ((b"", "is empty"), (b"  \n", "is empty"), (b'"text"', "byte 0 is '\"'")):
        path.write_bytes(data)
        with pytest.raises(FormatError, match=message):
            list(iter_objects(path))


def test_zip_that_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "e.zip"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    reader = Reader(path, convert)
    assert list(reader) == []
    [skipped] = reader.skipped
    assert "not a readable ZIP" in str(skipped.error)


def test_bad_conversation_is_skipped_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_bytes(dump([conv(0), conv(1, bad="n1.parent"), conv(2)]))
    reader = Reader(path, convert)
    assert ids(reader) == ["c0", "c2"]
    [skipped] = reader.skipped
    assert (skipped.index, skipped.source_id, skipped.file) == (1, "c1", str(path))
    assert skipped.error.path == f"{path}[1].mapping.n1.parent"
    assert skipped.error.node_id == "n1"
    assert "this field is broken" in str(skipped.error)

    with pytest.raises(FormatError) as caught:
        list(Reader(path, convert, errors="raise"))
    assert caught.value.path == f"{path}[1].mapping.n1.parent"


def test_items_that_are_not_objects_and_converter_bugs(tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_bytes(dump([conv(0), [1, 2], "text", {"texts": []}, conv(4)]))
    reader = Reader(path, convert)
    assert ids(reader) == ["c0", "c4"]
    assert [(s.index, s.error.path) for s in reader.skipped] == [
        (1, f"{path}[1]"),
        (2, f"{path}[2]"),
        (3, f"{path}[3]"),
    ]
    assert "is an array" in str(reader.skipped[0].error)
    assert "is a string" in str(reader.skipped[1].error)
    bug = reader.skipped[2].error
    assert "KeyError" in str(bug)
    assert isinstance(bug.__cause__, KeyError)
    with pytest.raises(FormatError, match="is an array"):
        list(iter_objects(path))


def test_nesting_deeper_than_the_limit(tmp_path: Path) -> None:
    deep: Any = "bottom"
    for _ in range(MAX_DEPTH + 5):
        deep = {"a": deep}
    path = tmp_path / "conversations.json"
    path.write_bytes(dump([conv(0), conv(1, extra=deep), conv(2)]))
    reader = Reader(path, convert)
    assert ids(reader) == ["c0", "c2"]
    [skipped] = reader.skipped
    assert f"nested deeper than {MAX_DEPTH} levels" in str(skipped.error)
    assert skipped.error.path is not None
    assert skipped.error.path.startswith(f"{path}[1].extra.a.a")


def test_errors_argument_is_checked() -> None:
    with pytest.raises(ValueError, match="errors must be"):
        Reader(io.BytesIO(b"[]"), convert, errors="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------ hostile


def test_zip_member_paths_are_never_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = make_zip(
        work / "e.zip",
        {"../evil.json": dump([conv(1)]), "/abs/conversations.json": dump([conv(2)])},
    )
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert ids(Reader(archive, convert)) == ["c2"]  # conversations*.json first
    assert ids(Reader(archive, convert, member_filter=lambda n: True)) == ["c1", "c2"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def _lie_about_size(archive: Path, member: str, size: int) -> None:
    """Rewrite a member's uncompressed size in its local and central headers."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, size)  # local header
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, size)  # central directory
    archive.write_bytes(bytes(data))


def test_zip_bomb_is_not_read_past_its_declared_size(tmp_path: Path) -> None:
    big = dump([conv(i, pad="x" * 1000) for i in range(2000)])  # ~2 MB, compresses well
    archive = make_zip(tmp_path / "bomb.zip", {"conversations.json": big})
    _lie_about_size(archive, "conversations.json", 5000)
    reader = Reader(archive, convert)
    got = ids(reader)
    assert len(got) <= 5  # what fits in the declared 5000 bytes
    [skipped] = reader.skipped
    assert skipped.file == "conversations.json"
    text = str(skipped.error)
    assert "conversations.json" in text
    offset = re.search(r"byte (\d+)", text)
    assert offset is not None
    assert int(offset.group(1)) <= 5000


def test_reading_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    with path.open("wb") as f:
        f.write(b"[")
        for i in range(4000):
            f.write((b"," if i else b"") + dump(conv(i, pad="y" * 2000)))
        f.write(b"]")
    assert path.stat().st_size > 8_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_objects(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 4000
    assert peak < 1_000_000  # one item (and a 64 KiB chunk) at a time, not the 8 MB file


def test_close_stops_reading_and_closes_the_archive(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "e.zip", {"conversations.json": dump([conv(1), conv(2)])})
    reader = Reader(archive, convert)
    assert next(reader).conversation_id == "c1"
    reader.close()
    with pytest.raises(StopIteration):
        next(reader)


# -------------------------------------------------------------------- write


def test_write_array_round_trips(tmp_path: Path) -> None:
    objs = [conv(1), {"id": "ü", "t": 1.5, "none": None}, conv(2)]
    path = tmp_path / "out.json"
    assert write_array(iter(objs), path) == 3
    data = path.read_bytes()
    assert json.loads(data) == objs
    assert "ü".encode() in data  # UTF-8 kept, not escaped
    assert [o for _, _, o in iter_objects(path)] == objs
    buffer = io.BytesIO()
    assert write_array([], buffer) == 0
    assert json.loads(buffer.getvalue()) == []
    assert not buffer.closed


def test_write_array_lone_surrogate_stays_valid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_array([{"text": "a\ud800b"}, {"text": "é"}], path)
    data = path.read_bytes()
    data.decode("utf-8")  # valid UTF-8
    assert json.loads(data) == [{"text": "a\ud800b"}, {"text": "é"}]


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_bytes(b"previous")

    def objects() -> Any:
        yield conv(1)
        yield {"bad": float("nan")}

    with pytest.raises(FormatError, match="cannot write") as caught:
        write_array(objects(), path)
    assert caught.value.path == "[1]"
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left

    def fail_midway() -> None:
        with open_dest(path) as out:
            out.write(b"partial")
            raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        fail_midway()
    assert path.read_bytes() == b"previous"
    with open_dest(str(path)) as out:
        out.write(b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
