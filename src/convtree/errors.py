"""The convtree error tree.

Every error convtree raises on purpose derives from [`ConvtreeError`][convtree.ConvtreeError], and
each also derives from the built-in exception a caller would naturally catch::

    ConvtreeError
    ├── FormatError (ValueError)            invalid document, message or field
    │   └── SchemaVersionError              unknown or unsupported schema_version
    ├── NodeNotFoundError (KeyError)        no node for an id, prefix or branch name
    ├── AmbiguousReferenceError (LookupError)  a prefix or branch name matches several nodes
    ├── TreeOperationError (ValueError)     an operation the tree cannot do (prune the root, ...)
    ├── FilterError (ValueError)            a bad listing filter, sort key, limit or offset
    └── StorageError                        a store cannot be opened, used or read
        ├── ConflictError                   a stale save that does not merge: reload
        ├── StorageUnavailableError         the store broke off mid-request: retrying is safe
        ├── PreconditionFailed              a backend's conditional write was refused
        └── DamagedRecordError              a stored record cannot be read (truncated, garbled)

    DamagedRecordWarning (UserWarning)      a listing skipped conversations it cannot read

Messages say what is wrong and where: the JSON path (``nodes[3].message.role``),
the node id, the version.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousReferenceError",
    "ConflictError",
    "ConvtreeError",
    "DamagedRecordError",
    "DamagedRecordWarning",
    "FilterError",
    "FormatError",
    "NodeNotFoundError",
    "PreconditionFailed",
    "SchemaVersionError",
    "StorageError",
    "StorageUnavailableError",
    "TreeOperationError",
]


class ConvtreeError(Exception):
    """Root of every error convtree raises on purpose."""


class FormatError(ConvtreeError, ValueError):
    """A document, message or field does not conform to the convtree format.

    Attributes:
        path: JSON path of the offending value (``"nodes[3].message.role"``), or
            ``None`` when the problem concerns the document as a whole.
        node_id: Id of the node concerned, when there is one.
    """

    def __init__(self, message: str, *, path: str | None = None, node_id: str | None = None):
        self.path = path
        self.node_id = node_id
        self.reason = message
        where = []
        if path:
            where.append(f"at {path}")
        if node_id is not None:
            where.append(f"node {node_id!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class SchemaVersionError(FormatError):
    """The document's ``schema_version`` is invalid, or newer than this library reads."""


class NodeNotFoundError(ConvtreeError, KeyError):
    """No node matches the given id, id prefix or branch name."""

    def __init__(self, message: str, *, ref: object = None):
        self.ref = ref
        super().__init__(message)

    def __str__(self) -> str:
        # KeyError would repr() the message; show it as written.
        return str(self.args[0]) if self.args else ""


class AmbiguousReferenceError(ConvtreeError, LookupError):
    """An id prefix or branch name matches several nodes.

    Attributes:
        candidates: Ids of (some of) the matching nodes.
    """

    def __init__(self, message: str, *, ref: object = None, candidates: list[str] | None = None):
        self.ref = ref
        self.candidates = candidates or []
        super().__init__(message)


class TreeOperationError(ConvtreeError, ValueError):
    """The requested operation is not possible on this tree.

    Examples: pruning the root, adding a sibling of the root, reusing an
    existing node id.
    """


class FilterError(ConvtreeError, ValueError):
    """A listing filter, sort key, limit or offset is invalid (the message says which)."""


class StorageError(ConvtreeError):
    """A store cannot be opened or used, or holds a record that cannot be read.

    The message names the store (its URL with any password masked), the
    conversation, and what to do (for example which extra to install).
    """


class ConflictError(StorageError):
    """The stored conversation changed since this state was loaded, in a way that
    does not merge (a prune, an edit in place, a metadata change on both sides,
    a deletion). Nothing was written: load the conversation again and redo the
    change. Appends on any branch never raise this; they merge.

    Attributes:
        conversation_id: The conversation that changed.
    """

    def __init__(self, message: str, *, conversation_id: str | None = None):
        self.conversation_id = conversation_id
        super().__init__(message)


class StorageUnavailableError(StorageError):
    """The store could not be reached, or the connection broke during a request.

    Whether the last write took effect is unknown; saving the same state again
    is always safe (a save that already happened is recognized and not applied
    twice). convtree retries a few times before raising this.
    """


class PreconditionFailed(StorageError):
    """A conditional write found another revision than it expected (raised by backends).

    The conversation storage catches it, reads the newer revision and merges or
    raises [`ConflictError`][convtree.ConflictError]; users see it only when calling a
    `RecordStore` directly.

    Attributes:
        key: The record key whose write was refused.
    """

    def __init__(self, message: str, *, key: str | None = None):
        self.key = key
        super().__init__(message)


class DamagedRecordError(StorageError):
    """A stored record cannot be read: truncated or garbled bytes, wrong types, a
    missing field, or a segment its head lists that is not there.

    Nothing was changed. The conversation can still be deleted
    (``delete_conversation``) or replaced (``save_conversation(state,
    overwrite=True)``); ``convtree check --repair`` sets its records aside.

    Attributes:
        conversation_id: The conversation the record belongs to, when known.
        key: The storage key of the damaged record.
        problem: What is wrong with it ("truncated JSON at byte 120", ...).
    """

    def __init__(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        key: str | None = None,
        problem: str | None = None,
    ):
        self.conversation_id = conversation_id
        self.key = key
        self.problem = problem if problem is not None else message
        super().__init__(message)


class DamagedRecordWarning(UserWarning):
    """A listing or count skipped conversations whose head record cannot be read.

    The other conversations are listed as usual. ``storage.damaged_conversations()``
    names them; ``convtree check`` reports, and ``convtree check --repair``
    quarantines, them.

    Attributes:
        conversation_ids: The ids of the skipped conversations.
    """

    def __init__(self, message: str, *, conversation_ids: tuple[str, ...] = ()):
        self.conversation_ids = conversation_ids
        super().__init__(message)
