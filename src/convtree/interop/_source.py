"""Reading and writing export files: the shared streaming layer of every interop format.

A *source* is a JSON file (one conversation object, or an array of them), a ZIP
export, a directory of such files, or an open binary file. Everything is
streamed: the top-level array is parsed one item at a time with ijson, ZIP
members are read through `zipfile.ZipFile.open` (never
extracted), so memory stays bounded by the largest single conversation however
big the export is.

Each format module builds its ``read()`` on `Reader`
and its ``write()`` on `write_array`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, Union

import ijson  # type: ignore[import-untyped]
from typing_extensions import Self

from .._closing import Closing
from .._json import MAX_DEPTH, check_depth
from ..errors import ConvtreeError, FormatError
from ..state import ConversationState

__all__ = [
    "Dest",
    "Reader",
    "Skipped",
    "Source",
    "default_member_filter",
    "iter_objects",
    "open_dest",
    "write_array",
    "write_exports",
]

Source = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", IO[bytes]]
"""What `Reader` and `iter_objects` read: a path
(str, bytes or path-like) to a JSON file, a ZIP or a directory, or an open binary file."""

Dest = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", IO[bytes]]
"""Where `write_array` writes: a path or an open
binary file."""

MemberFilter = Callable[[str], bool]
"""Chooses the files of a ZIP or directory to read, by their ``/``-separated relative name."""

_CHUNK = 64 * 1024
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive
_BOM = b"\xef\xbb\xbf"
_SPACE = b" \t\r\n"

# JSON files of exports that hold no conversations (ChatGPT's account files).
_NOT_CONVERSATIONS = frozenset(
    {
        "user.json",
        "message_feedback.json",
        "model_comparisons.json",
        "shared_conversations.json",
        "user_settings.json",
        "group_chats.json",
        "shopping.json",
    }
)
_CONVERSATION_SHARD = re.compile(r"conversations([-_.]?\d+)?\.json", re.IGNORECASE)


class Skipped(NamedTuple):
    """One conversation that could not be imported, and why."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose
    """Position in the export (0-based, counted over all files)."""
    source_id: str | None
    """Its id in the source, when it could be read."""
    file: str | None
    """The file (or ZIP member) it came from."""
    error: FormatError
    """What is wrong, and where (``error.path``)."""


def default_member_filter(names: Iterable[str]) -> list[str]:
    """Choose which files of a ZIP or directory hold conversations.

    Only ``*.json`` files count; hidden files (``.x.json``, macOS ``._x.json``,
    anything under ``__MACOSX/``) and known account files (``user.json``,
    ``message_feedback.json``, ...) never do. When some files are named like
    ChatGPT's conversation files (``conversations.json``, ``conversations-000.json``,
    ...), only those are read; otherwise every remaining JSON file is.

    Args:
        names: ``/``-separated relative names of every file.

    Returns:
        The chosen names, in natural order (``conversations-2`` before ``-10``).
    """
    candidates = []
    for name in names:
        parts = name.split("/")
        base = parts[-1]
        if not base.lower().endswith(".json") or base.lower() in _NOT_CONVERSATIONS:
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in parts):
            continue
        candidates.append(name)
    shards = [n for n in candidates if _CONVERSATION_SHARD.fullmatch(n.rsplit("/", 1)[-1])]
    return sorted(shards or candidates, key=_natural_key)


def _natural_key(name: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


class _Stream:
    """A binary reader for ijson: counts bytes, caps a ZIP member at its declared size.

    ``first_byte()`` reads up to the first non-space byte (skipping a UTF-8 BOM,
    which the parser refuses) and keeps what it read for the parser.
    """

    __slots__ = ("_limit", "_prefix", "_raw", "eof", "offset", "start")

    def __init__(self, raw: IO[bytes], limit: int | None) -> None:
        self._raw = raw
        self._prefix = b""
        self._limit = limit
        self.offset = 0  # bytes of the file read so far
        self.start = 0  # where the last non-empty chunk began
        self.eof = False

    def _read_raw(self, size: int) -> bytes:
        data = self._raw.read(size)
        if self._limit is not None and self.offset + len(data) > self._limit:
            # A ZIP member yielding more than it declared: never read past it.
            raise _Oversized(self._limit)
        if data:
            self.start = self.offset
            self.offset += len(data)
        else:
            self.eof = True
        return data

    def first_byte(self) -> tuple[bytes, int]:
        """The first non-space byte (``b""`` if none) and its offset."""
        prefix = b""
        while not prefix.removeprefix(_BOM).lstrip(_SPACE):
            chunk = self._read_raw(_CHUNK)
            if not chunk:
                break
            prefix += chunk
        body = prefix[len(_BOM) :] if prefix.startswith(_BOM) else prefix
        self._prefix = body
        text = body.lstrip(_SPACE)
        return text[:1], len(prefix) - len(text)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        if self._prefix:
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._read_raw(size)


class _Oversized(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(limit)


class _Member(NamedTuple):
    name: str  # shown in errors: the path given, or the member's name
    open: Callable[[], IO[bytes]]
    size: int | None  # declared size of a ZIP member
    close: bool  # whether to close what ``open`` returned


def _source_name(source: Source) -> str:
    if isinstance(source, (str, bytes, os.PathLike)):
        return os.fsdecode(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


def _members(
    source: Source, stack: ExitStack, member_filter: MemberFilter | None
) -> Iterator[_Member]:
    """The files of ``source`` that hold conversations (a ZIP stays open on ``stack``)."""
    if not isinstance(source, (str, bytes, os.PathLike)):
        if not callable(getattr(source, "read", None)):
            raise TypeError(
                f"cannot read from {type(source).__name__}: give a path or an open binary file"
            )
        head = _peek(source)
        if head[:4] in _ZIP_MAGIC:
            yield from _zip_members(_zip(source, _source_name(source), stack), member_filter)
        else:
            name = _source_name(source)
            yield _Member(name, lambda: source, None, False)
        return
    path = Path(os.fsdecode(source))
    name = str(path)
    if path.is_dir():
        names = sorted(
            (p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()),
            key=_natural_key,
        )
        chosen = [n for n in names if member_filter(n)] if member_filter else None
        for rel in default_member_filter(names) if chosen is None else chosen:
            yield _Member(f"{name}/{rel}", _file_opener(path / rel), None, True)
        return
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise FormatError(f"cannot read {name}: {exc.strerror or exc}", path=name) from None
    if magic in _ZIP_MAGIC:
        yield from _zip_members(_zip(path, name, stack), member_filter)
    else:
        yield _Member(name, _file_opener(path), None, True)


def _file_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


def _member_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    return lambda: archive.open(info)


def _peek(stream: IO[bytes]) -> bytes:
    """The first bytes of an open file without consuming them, if it can tell them."""
    peek = getattr(stream, "peek", None)
    if callable(peek):
        head: bytes = peek(4)
        return head[:4]
    if stream.seekable():
        where = stream.tell()
        head = stream.read(4)
        stream.seek(where)
        return head
    return b""  # an unseekable stream: read as JSON (a ZIP cannot be streamed)


def _zip(file: str | Path | IO[bytes], name: str, stack: ExitStack) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise FormatError(f"not a readable ZIP: {exc}", path=name) from None
    stack.callback(archive.close)
    return archive


def _zip_members(archive: zipfile.ZipFile, member_filter: MemberFilter | None) -> Iterator[_Member]:
    infos = {info.filename: info for info in archive.infolist() if not info.is_dir()}
    names = (
        default_member_filter(infos)
        if member_filter is None
        else sorted((n for n in infos if member_filter(n)), key=_natural_key)
    )
    for member in names:
        info = infos[member]
        # Only read: a member named ``../x`` or ``/etc/x`` is never written anywhere.
        yield _Member(member, _member_opener(archive, info), info.file_size, True)


def _items(member: _Member) -> Iterator[Any]:
    """The conversation objects of one file: the top-level object, or each array item.

    Raises:
        FormatError: the file cannot be opened or read, is not JSON, is cut
            short, or is not an object or array; naming the file and the byte
            offset. Items before the problem have been yielded.
    """
    name = member.name
    try:
        raw = member.open()
    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError, ValueError) as exc:
        raise FormatError(f"cannot read {name}: {exc}", path=name) from None
    stream = _Stream(raw, member.size)
    try:
        first, at = stream.first_byte()
        if first == b"[":
            prefix = "item"
        elif first == b"{":
            prefix = ""
        elif not first:
            raise FormatError(f"{name} is empty: no JSON in it", path=name)
        else:
            shown = first.decode("latin-1")
            raise FormatError(
                f"{name} is not a JSON object or array: byte {at} is {shown!r}", path=name
            )
        try:
            yield from ijson.items(stream, prefix, use_float=True, buf_size=_CHUNK)
        except ijson.JSONError as exc:
            raise _json_error(name, stream, exc) from None
    except _Oversized as exc:
        raise FormatError(
            f"{name} holds more than its declared {exc.limit} bytes (a damaged or hostile "
            "ZIP); not read past them",
            path=name,
        ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:
        raise FormatError(
            f"{name} cannot be read past byte {stream.offset}: {exc}", path=name
        ) from None
    finally:
        if member.close:
            raw.close()


def _json_error(name: str, stream: _Stream, exc: Exception) -> FormatError:
    text = str(exc).strip()
    detail = text.splitlines()[0] if text else type(exc).__name__
    if "premature EOF" in detail:
        return FormatError(
            f"{name} is cut short: the JSON ends at byte {stream.offset} before it is complete",
            path=name,
        )
    if "integer overflow" in detail:
        detail = "an integer beyond 64 bits, which the streaming parser cannot read"
    return FormatError(
        f"{name} is not valid JSON between bytes {stream.start} and {stream.offset} ({detail})",
        path=name,
    )


def _locate(error: FormatError, where: str) -> FormatError:
    """``error`` with ``where`` (``file[3]``) put before its path."""
    inner = error.path
    if not inner or inner == "$":
        path = where
    elif inner.startswith("["):
        path = where + inner
    else:
        path = f"{where}.{inner}"
    try:
        return type(error)(error.reason, path=path, node_id=error.node_id)
    except TypeError:  # a subclass with another signature
        return FormatError(error.reason, path=path, node_id=error.node_id)


def _where(member: str, at: int | None) -> str:
    return member if at is None else f"{member}[{at}]"


def _source_id(obj: Any) -> str | None:
    """The id of a raw conversation object, tried with every format's key."""
    if not isinstance(obj, dict):
        return None
    for key in ("conversation_id", "conversationId", "id"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    chat = obj.get("chat")
    if isinstance(chat, dict):
        value = chat.get("id")
        if isinstance(value, str) and value:
            return value
    return None


def _checked(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise FormatError(f"a conversation is a JSON object, this is {_json_type(obj)}", path=where)
    if not _within_depth(obj):
        check_depth(obj, where)  # names the path
    return obj


def _within_depth(value: dict[str, Any] | list[Any]) -> bool:
    """Whether ``value`` nests at most `MAX_DEPTH` levels (a walk level by level, ~8x
    faster than `check_depth`, which builds every path in case it must name one)."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            return False
        below: list[Any] = []
        add = below.append
        for item in level:
            for inner in item.values() if type(item) is dict else item:
                kind = type(inner)
                if kind is dict or kind is list:
                    add(inner)
        level = below
        depth += 1
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else type(value).__name__


def iter_objects(
    source: Source, *, member_filter: MemberFilter | None = None
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Stream the raw conversation objects of an export.

    Reads a JSON file holding one object or an array of them, a ZIP (the
    ``*.json`` members that hold conversations, see
    `default_member_filter`),
    a directory of such files, or an open binary file; top-level arrays are
    parsed one item at a time (bounded memory). Numbers become ``int`` /
    ``float``, never ``Decimal``.

    Args:
        source: A path (str, bytes, path-like) or an open binary file.
        member_filter: For a ZIP or directory, which files to read, by their
            ``/``-separated relative name; the default picks the conversation files.

    Yields:
        ``(file name, index, object)``: the index counts over all files, from 0.

    Raises:
        FormatError: at the first problem (a file that is not JSON or is cut
            short, an item that is not an object, nesting deeper than
            `MAX_DEPTH`), naming the file and where; objects before it have
            been yielded. `Reader` instead
            skips bad conversations and goes on.
    """
    index = 0
    with ExitStack() as stack:
        for member in _members(source, stack, member_filter):
            for at, obj in enumerate(_items(member)):
                yield member.name, index, _checked(obj, f"{member.name}[{at}]")
                index += 1


class BaseReader(Closing, Iterator[ConversationState]):
    """What the readers of every format share: the ``errors`` choice, `skipped` and
    `count`, iteration, and closing as a context manager."""

    def __init__(self, errors: Literal["skip", "raise"]) -> None:
        if errors not in ("skip", "raise"):
            raise ValueError(f"errors must be 'skip' or 'raise', not {errors!r}")
        self.skipped: list[Skipped] = []
        self.count = 0
        self._raise = errors == "raise"

    def __iter__(self) -> Self:
        return self


class Reader(BaseReader):
    """Iterates the conversations of a source; the ones that cannot be imported are collected.

    Each raw object is converted with ``convert`` (a format's ``from_dict``). With
    ``errors="skip"`` (the default) a conversation that fails is recorded in
    `skipped` and reading goes on; a file that
    is not JSON or is cut short is recorded too (after the conversations before
    the break), and the next file is read. With ``errors="raise"`` the first
    problem raises.

    Every recorded or raised [`FormatError`][convtree.FormatError] has a path
    starting with the file and the item (``conversations.json[3].mapping.n1.parent``).
    An unexpected exception inside ``convert`` (a converter bug meeting an odd
    shape) is reported the same way, as a ``FormatError`` chained to it.

    Example:
        ```python
        with chatgpt.read("export.zip") as reader:
            for state in reader:
                ...
        for s in reader.skipped:
            print(s.index, s.source_id, s.error)
        ```

    Attributes:
        skipped: The conversations (or unreadable file remainders) not imported.
        count: Conversations yielded so far.
    """

    def __init__(
        self,
        source: Source,
        convert: Callable[[dict[str, Any]], ConversationState],
        *,
        errors: Literal["skip", "raise"] = "skip",
        member_filter: MemberFilter | None = None,
    ) -> None:
        """Prepare to read ``source`` (nothing is opened before the first item).

        Args:
            source: A path (str, bytes, path-like) to a JSON file, ZIP or
                directory, or an open binary file (left open).
            convert: Turns one raw object into a state, raising ``FormatError``.
            errors: ``"skip"`` to record bad conversations and go on, ``"raise"``
                to raise the first problem.
            member_filter: For a ZIP or directory, which files to read (by
                ``/``-separated relative name); default: the conversation files.
        """
        super().__init__(errors)
        self._source = source
        self._convert = convert
        self._filter = member_filter
        self._run = self._states()

    def __next__(self) -> ConversationState:
        return next(self._run)

    def close(self) -> None:
        """Stop reading and close what was opened (an open file given as source stays open)."""
        self._run.close()

    def _report(
        self, index: int, source_id: str | None, file: str | None, error: FormatError
    ) -> None:
        if self._raise:
            raise error
        self.skipped.append(Skipped(index, source_id, file, error))

    def _states(self) -> Generator[ConversationState, None, None]:
        index = 0
        with ExitStack() as stack:
            try:
                members = list(_members(self._source, stack, self._filter))
            except FormatError as exc:
                self._report(index, None, _source_name(self._source), exc)
                return
            for member in members:
                items = _items(member)
                at = 0
                while True:
                    where = f"{member.name}[{at}]"
                    try:
                        obj = next(items)
                    except StopIteration:
                        break
                    except FormatError as exc:
                        # The rest of this file cannot be read; go on with the next one.
                        self._report(index, None, member.name, exc)
                        index += 1
                        break
                    try:
                        state = self._convert(_checked(obj, where))
                    except FormatError as exc:
                        located = exc if exc.path and exc.path.startswith(where) else None
                        self._report(
                            index, _source_id(obj), member.name, located or _locate(exc, where)
                        )
                    except (
                        ConvtreeError,
                        LookupError,
                        TypeError,
                        ValueError,
                        AttributeError,
                    ) as exc:
                        wrapped = FormatError(
                            f"cannot convert this conversation: {type(exc).__name__}: {exc}",
                            path=where,
                        )
                        wrapped.__cause__ = exc
                        self._report(index, _source_id(obj), member.name, wrapped)
                    else:
                        self.count += 1
                        yield state
                    index += 1
                    at += 1


@contextmanager
def open_dest(dest: Dest) -> Iterator[IO[bytes]]:
    """Open where an export goes: a path is written atomically, an open file as it is.

    For a path, the bytes go to a temporary file beside it that replaces the
    target only when the block ends without an exception (a failed export
    leaves any previous file untouched and no temporary behind). An open binary
    file is written to and left open.
    """
    if not isinstance(dest, (str, bytes, os.PathLike)):
        yield dest
        return
    target = Path(os.fsdecode(dest))
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def write_array(objects: Iterable[dict[str, Any]], dest: Dest) -> int:
    """Stream ``objects`` out as a JSON array, one object per line.

    Each object is serialized on its own (memory holds one at a time). Text
    stays UTF-8 (an object holding a lone surrogate is written with ``\\u``
    escapes instead, so the file is always valid UTF-8).

    Args:
        objects: The objects (any iterable, consumed once).
        dest: A path (written atomically, see `open_dest`)
            or an open binary file.

    Returns:
        How many objects were written.

    Raises:
        FormatError: an object holds a value JSON cannot represent (NaN, a
            datetime, ...), naming its index; a path target is left untouched.
    """
    count = 0
    with open_dest(dest) as out:
        out.write(b"[")
        for obj in objects:
            try:
                try:
                    data = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
                except UnicodeEncodeError:
                    data = json.dumps(obj, allow_nan=False).encode("ascii")
            except (TypeError, ValueError) as exc:
                raise FormatError(
                    f"cannot write this object as JSON: {exc}", path=f"[{count}]"
                ) from None
            out.write(b",\n" if count else b"\n")
            out.write(data)
            count += 1
        out.write(b"\n]\n" if count else b"]\n")
    return count


def write_exports(
    states: Iterable[ConversationState],
    dest: Dest,
    export: Callable[[ConversationState], dict[str, Any] | list[dict[str, Any]]],
) -> int:
    """`write_array` of what ``export`` makes of each state: one object, or a list of
    them (``branches``), each written as an element; states are consumed one at a time."""

    def objects() -> Iterator[dict[str, Any]]:
        for state in states:
            out = export(state)
            if isinstance(out, list):
                yield from out
            else:
                yield out

    return write_array(objects(), dest)
