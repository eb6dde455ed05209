"""Import and export of other chat applications' conversation formats.

One module per format, each with the same functions: ``read(source)`` (an
iterator of [`ConversationState`][convtree.ConversationState] that collects the
conversations it cannot import in ``.skipped``), ``write(states, dest, mode=...)``,
``from_dict(obj)``, ``to_dict(state, mode=...)`` and ``looks_like(obj)``:

- ``chatgpt``: [`convtree.interop.chatgpt`][convtree.interop.chatgpt], ChatGPT's
  ``conversations.json`` (or its ZIP);
- ``openwebui``: [`convtree.interop.openwebui`][convtree.interop.openwebui], Open WebUI chats;
- ``librechat``: [`convtree.interop.librechat`][convtree.interop.librechat], LibreChat exports;
- ``openai``: ``convtree.interop._openai_file``, one JSON array of Chat Completions
  messages per file, over [`convtree.interop.openai`][convtree.interop.openai];
- ``convtree``: [`convtree.interop.document`][convtree.interop.document], convtree
  documents (one, or an array).

[`FORMATS`][convtree.interop.FORMATS] maps each name to its module (imported on
first use); [`detect()`][convtree.interop.detect] names the format of a file
from its first object. Stores that dataknobs-llm wrote are copied with
[`convtree.interop.dataknobs_llm.migrate`][convtree.interop.dataknobs_llm.migrate].
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Generator, Iterator, Mapping
from contextlib import closing
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, cast

from ..errors import ConvtreeError, FormatError
from ._fields import MODES, Mode

if TYPE_CHECKING:
    from ..state import ConversationState
    from ..storage.base import ConversationStorage
    from ._source import Source

__all__ = [
    "DETECTION_ORDER",
    "FORMATS",
    "FORMAT_NAMES",
    "MODES",
    "Mode",
    "Outcome",
    "detect",
    "detect_object",
    "put",
]


_MODULES: Final = {
    "chatgpt": "convtree.interop.chatgpt",
    "openwebui": "convtree.interop.openwebui",
    "librechat": "convtree.interop.librechat",
    "openai": "convtree.interop._openai_file",
    "convtree": "convtree.interop.document",
}

FORMAT_NAMES: Final = tuple(_MODULES)
"""Every format name, as ``--format`` takes it."""

DETECTION_ORDER: Final = ("convtree", "chatgpt", "openwebui", "librechat", "openai")
"""The order in which [`detect()`][convtree.interop.detect] asks each format's ``looks_like``."""


class _Formats(Mapping[str, ModuleType]):
    """Format name -> module, each imported on first access."""

    def __getitem__(self, name: str) -> ModuleType:
        try:
            target = _MODULES[name]
        except KeyError:
            raise KeyError(
                f"unknown format {name!r}; the formats are {', '.join(FORMAT_NAMES)}"
            ) from None
        return importlib.import_module(target)

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)

    def __repr__(self) -> str:
        return f"FORMATS({', '.join(FORMAT_NAMES)})"


FORMATS: Final[Mapping[str, ModuleType]] = _Formats()
"""Format name -> its module (``read``, ``write``, ``from_dict``, ``to_dict``, ``looks_like``)."""


def detect_object(obj: Mapping[str, Any]) -> str | None:
    """The name of the format one raw conversation object (or message) is in, or ``None``.

    Formats are asked in [`DETECTION_ORDER`][convtree.interop.DETECTION_ORDER]:
    a convtree document has ``nodes`` and ``edges``; ChatGPT a ``mapping``; Open
    WebUI a ``chat.history`` (or a bare ``history``); LibreChat a
    ``conversationId`` and ``messages``; an OpenAI message list's first item a
    ``role``.
    """
    for name in DETECTION_ORDER:
        if FORMATS[name].looks_like(obj):
            return name
    return None


def detect(source: Source) -> str:
    """The format of an export, from its first conversation object only.

    Args:
        source: A path to a JSON file, ZIP or directory (an open binary file is
            consumed by detection: give a path when you mean to read it after).

    Returns:
        A key of [`FORMATS`][convtree.interop.FORMATS].

    Raises:
        FormatError: the file cannot be read, holds no conversation, or its
            first object is in no known format (the message lists its keys).
    """
    from ._source import iter_objects

    objects = cast("Generator[tuple[str, int, dict[str, Any]], None, None]", iter_objects(source))
    with closing(objects):
        for name, index, obj in objects:
            found = detect_object(obj)
            if found is None:
                keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
                raise FormatError(
                    f"cannot tell the format: the first object has the keys {keys}; "
                    f"name it with --format ({', '.join(FORMAT_NAMES)})",
                    path=f"{name}[{index}]",
                )
            return found
    raise FormatError("no conversation in it: an empty array, or no JSON file", path=str(source))


class Outcome(enum.Enum):
    """What [`put()`][convtree.interop.put] did with a conversation."""

    ADDED = "added"
    """It was not stored: it is now."""
    REPLACED = "replaced"
    """A different conversation of that id was stored: replaced (``replace=True``)."""
    UNCHANGED = "unchanged"
    """The same conversation was stored already: nothing written."""
    KEPT = "kept"
    """A different conversation of that id is stored and was kept (``replace=False``)."""


async def put(
    storage: ConversationStorage,
    state: ConversationState,
    *,
    replace: bool = False,
    dry_run: bool = False,
) -> Outcome:
    """Save an imported conversation unless the store already holds it.

    The stored conversation of the same id, if any, is loaded and compared
    (every node, the cursor, metadata and times): the same is ``UNCHANGED``; a
    different one is replaced only with ``replace`` (a save with
    ``overwrite=True``), else ``KEPT``. A stored conversation that cannot be read
    counts as different. With ``dry_run`` nothing is written; the outcome is
    what would have happened.

    Raises:
        StorageError: the store failed (a per-conversation problem, such as a
            damaged stored record without ``replace``, too).
    """
    try:
        stored = await storage.load_conversation(state.conversation_id)
    except ConvtreeError:
        if not replace:
            raise
        stored = None
        exists = True
    else:
        exists = stored is not None
    if stored is not None and stored.to_dict() == state.to_dict():
        return Outcome.UNCHANGED
    if exists and not replace:
        return Outcome.KEPT
    if not dry_run:
        await storage.save_conversation(state, overwrite=True)
    return Outcome.REPLACED if exists else Outcome.ADDED
