"""The migration chain: every document convtree or the reference ever wrote, upgraded.

Each step is a named function registered with its from- and to-version; the
steps form one chain ``0.0.0 -> 1.0.0 -> 1.1.0 -> 2.0.0 -> 2.1.0``. Steps never mutate
their input: they return a new document (sharing unchanged values).

=========  ==========  ==================================================
from       to          what the step does
=========  ==========  ==================================================
0.0.0      1.0.0       adds ``schema_version`` (unversioned documents)
1.0.0      1.1.0       copies ``tool_calls`` / ``function_call`` from the
                       node metadata into the message, as the reference did
1.1.0      2.0.0       positional ids become opaque ids, kept as they are;
                       sibling order is taken from the positional ids;
                       naive timestamps are read as UTC; a message without
                       ``content`` gets ``""`` (what the reference read)
2.0.0      2.1.0       relabels: 2.1.0 only adds the optional
                       ``active_children`` (remembered branch choices)
=========  ==========  ==================================================

Versions are compared with `packaging.version.Version`. A document of a
newer *major* version raises [`SchemaVersionError`][convtree.SchemaVersionError]; one of a
newer *minor* version of the current major loads as it is, and the fields this
version does not know are kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

from .errors import ConvtreeError, FormatError, SchemaVersionError
from .format import CURRENT_SCHEMA_VERSION

__all__ = [
    "MIGRATIONS",
    "Migration",
    "MigrationChain",
    "MigrationChainError",
    "parse_schema_version",
    "upgrade_document",
]

MigrationFunc = Callable[[Mapping[str, Any]], dict[str, Any]]

_VERSION = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*)){0,2}")

UNVERSIONED = "0.0.0"
"""The version of a document without ``schema_version``."""


class MigrationChainError(ConvtreeError):
    """The registered migrations do not form one chain to the current version."""


@dataclass(frozen=True)
class Migration:
    """One named step of the chain."""

    from_version: Version
    to_version: Version
    name: str
    func: MigrationFunc

    def __call__(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        return self.func(doc)


def parse_schema_version(value: object) -> Version:
    """Parse a ``schema_version`` value (``None`` means an unversioned document).

    Raises:
        SchemaVersionError: if the value is not a string of dot-separated numbers.
    """
    if value is None:
        return Version(UNVERSIONED)
    if not isinstance(value, str):
        raise SchemaVersionError(
            f"schema_version must be a string like '2.0.0', got {type(value).__name__}",
            path="schema_version",
        )
    if not _VERSION.fullmatch(value):
        raise SchemaVersionError(
            f"schema_version {value!r} is not a version like '2.0.0'", path="schema_version"
        )
    return Version(value)


def _label(version: Version) -> str:
    """Canonical three-part label: Version('1.0') -> '1.0.0'."""
    parts = (*version.release, 0, 0)[:3]
    return ".".join(str(p) for p in parts)


class MigrationChain:
    """Named migration steps that lead from the oldest format to ``current``."""

    def __init__(self, current: str, steps: Iterable[Migration] = ()) -> None:
        self.current = Version(current)
        self._steps: list[Migration] = list(steps)

    @property
    def steps(self) -> tuple[Migration, ...]:
        """The registered steps, in registration order."""
        return tuple(self._steps)

    def register(
        self, from_version: str, to_version: str
    ) -> Callable[[MigrationFunc], MigrationFunc]:
        """Decorator registering ``func`` as the step ``from_version -> to_version``."""

        def decorator(func: MigrationFunc) -> MigrationFunc:
            self._steps.append(
                Migration(Version(from_version), Version(to_version), func.__name__, func)
            )
            return func

        return decorator

    def validate(self) -> list[Migration]:
        """Check the steps form one chain from the oldest version to ``current``.

        Returns:
            The steps in chain order.

        Raises:
            MigrationChainError: on a step that goes backwards, two steps from one
                version, a gap, a cycle, or a chain that does not end at ``current``.
        """
        by_from: dict[Version, Migration] = {}
        for step in self._steps:
            if step.to_version <= step.from_version:
                raise MigrationChainError(
                    f"migration {step.name} goes from {step.from_version} back to {step.to_version}"
                )
            if step.from_version in by_from:
                raise MigrationChainError(
                    f"two migrations start at {step.from_version}: "
                    f"{by_from[step.from_version].name} and {step.name}"
                )
            by_from[step.from_version] = step
        targets = {step.to_version for step in self._steps}
        starts = [v for v in by_from if v not in targets]
        if len(starts) != 1:
            raise MigrationChainError(
                f"the migrations do not form one chain (starting points: "
                f"{', '.join(str(v) for v in sorted(starts)) or 'none, a cycle'})"
            )
        ordered: list[Migration] = []
        version = starts[0]
        while version in by_from:
            step = by_from[version]
            ordered.append(step)
            version = step.to_version
            if len(ordered) > len(self._steps):  # pragma: no cover - prevented above
                raise MigrationChainError("the migrations form a cycle")
        if len(ordered) != len(self._steps):
            raise MigrationChainError("some migrations are not on the chain (a gap or a cycle)")
        if version != self.current:
            raise MigrationChainError(
                f"the chain ends at {version}, not at the current version {self.current}"
            )
        return ordered

    def path_from(self, version: Version) -> list[Migration]:
        """The steps that upgrade a document of ``version`` to the current version.

        A patch release of a known version (``1.1.3``) migrates like its
        ``major.minor`` (``1.1.0``): patch releases never change the format.

        Raises:
            SchemaVersionError: if no step starts at that version.
        """
        ordered = self.validate()
        for i, step in enumerate(ordered):
            if step.from_version.release[:2] == (*version.release, 0)[:2]:
                return ordered[i:]
        known = ", ".join(str(s.from_version) for s in ordered)
        raise SchemaVersionError(
            f"no migration from schema_version {_label(version)} "
            f"(this convtree reads {known} and {self.current.major}.x)",
            path="schema_version",
        )

    def upgrade(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``doc`` upgraded to the current major version, without mutating it.

        Raises:
            FormatError: if ``doc`` is not a mapping, or a step finds it malformed.
            SchemaVersionError: for a newer major version or an unknown old one.
        """
        if not isinstance(doc, Mapping):
            raise FormatError(f"a conversation document is a JSON object, got {type(doc).__name__}")
        version = parse_schema_version(doc.get("schema_version"))
        if version.major > self.current.major:
            raise SchemaVersionError(
                f"schema_version {doc.get('schema_version')} is newer than this convtree reads "
                f"({self.current.major}.x); upgrade convtree to read it",
                path="schema_version",
            )
        if version.major == self.current.major and version >= self.current:
            label = _label(version)
            return (
                dict(doc)
                if doc.get("schema_version") == label
                else {**doc, "schema_version": label}
            )
        out: Mapping[str, Any] = doc
        for step in self.path_from(version):
            try:
                out = step(out)
            except ConvtreeError:
                raise
            except Exception as exc:  # a malformed document a step could not read
                raise FormatError(
                    f"cannot migrate the document from {step.from_version} to "
                    f"{step.to_version} ({step.name}): {type(exc).__name__}: {exc}"
                ) from exc
        return dict(out)


MIGRATIONS = MigrationChain(CURRENT_SCHEMA_VERSION)
"""The chain every document is upgraded through."""


def upgrade_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Upgrade ``doc`` to the current format without mutating it (see `MigrationChain`)."""
    return MIGRATIONS.upgrade(doc)


@MIGRATIONS.register("0.0.0", "1.0.0")
def m0_0_0_add_schema_version(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Unversioned documents had the 1.0.0 shape; label them."""
    return {"schema_version": "1.0.0", **{k: v for k, v in doc.items() if k != "schema_version"}}


@MIGRATIONS.register("1.0.0", "1.1.0")
def m1_0_0_tool_calls_into_message(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Copy ``tool_calls`` / ``function_call`` from node metadata into the message.

    Before 1.1.0 the reference dropped these fields from the message and kept a
    copy in the node's metadata. As the reference did, the metadata copy stays.
    """
    out = {**doc, "schema_version": "1.1.0"}
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        return out
    new_nodes: list[Any] = []
    for record in nodes:
        message = record.get("message") if isinstance(record, Mapping) else None
        metadata = record.get("metadata") if isinstance(record, Mapping) else None
        if isinstance(message, Mapping) and isinstance(metadata, Mapping):
            restored = {
                key: metadata[key]
                for key in ("tool_calls", "function_call")
                if key not in message and key in metadata
            }
            if restored:
                record = {**record, "message": {**message, **restored}}
        new_nodes.append(record)
    out["nodes"] = new_nodes
    return out


_POSITIONAL = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_NAIVE_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?")


@MIGRATIONS.register("1.1.0", "2.0.0")
def m1_1_0_opaque_ids(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Move from positional ids to opaque ids.

    * Ids are kept exactly as they are (``""``, ``"0"``, ``"0.1.2"``); from now
      on they are opaque strings and never recomputed.
    * Sibling order: 1.x documents did not keep edges in order, the positional
      ids were the order. Where every child of a parent has the canonical
      positional id ``<parent>.<k>``, the children are ordered by ``k``;
      otherwise the edges keep their order.
    * Naive timestamps (the reference wrote local time without an offset) are
      read as UTC.
    * A message without ``content`` gets ``""``, which is what the reference read.
    """
    out = {**doc, "schema_version": "2.0.0"}
    for key in ("created_at", "updated_at"):
        if key in out:
            out[key] = _as_utc(out[key])
    nodes = doc.get("nodes")
    if isinstance(nodes, list):
        new_nodes: list[Any] = []
        for record in nodes:
            if isinstance(record, Mapping):
                record = dict(record)
                if "timestamp" in record:
                    record["timestamp"] = _as_utc(record["timestamp"])
                message = record.get("message")
                if isinstance(message, Mapping) and "content" not in message:
                    record["message"] = {**message, "content": ""}
            new_nodes.append(record)
        out["nodes"] = new_nodes
    edges = doc.get("edges")
    if isinstance(edges, list):
        out["edges"] = _order_siblings_by_position(edges)
    return out


def _as_utc(value: Any) -> Any:
    if isinstance(value, str) and _NAIVE_TIMESTAMP.fullmatch(value):
        return value + "+00:00"
    return value


def _order_siblings_by_position(edges: list[Any]) -> list[Any]:
    if not all(
        isinstance(e, (list, tuple)) and len(e) == 2 and all(isinstance(x, str) for x in e)
        for e in edges
    ):
        return list(edges)  # malformed: leave it to validation to say where
    groups: dict[str, list[Any]] = {}
    for edge in edges:
        groups.setdefault(edge[0], []).append(edge)
    ordered: list[Any] = []
    for parent, group in groups.items():
        positions = [_position(parent, edge[1]) for edge in group]
        known = [p for p in positions if p is not None]
        if len(known) == len(group) and len(set(known)) == len(known):
            pairs = sorted(zip(known, group, strict=True), key=lambda pe: pe[0])
            group = [edge for _, edge in pairs]
        ordered.extend(group)
    return ordered


def _position(parent: str, child: str) -> int | None:
    """k when ``child`` is the canonical positional id of ``parent``'s k-th child."""
    if parent == "":
        last = child
    elif child.startswith(parent + ".") and _POSITIONAL.fullmatch(parent):
        last = child[len(parent) + 1 :]
    else:
        return None
    if "." in last or not _POSITIONAL.fullmatch(last):
        return None
    return int(last)


@MIGRATIONS.register("2.0.0", "2.1.0")
def m2_0_0_active_children(doc: Mapping[str, Any]) -> dict[str, Any]:
    """2.1.0 adds the optional ``active_children``; a 2.0.0 document has none to add."""
    return {**doc, "schema_version": "2.1.0"}
