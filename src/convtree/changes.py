"""What changed in a conversation since it was loaded or saved: pure values, no I/O.

A [`ConversationState`][convtree.ConversationState] keeps a journal of what changed since it
was loaded from (or last saved to) a store. [`changes()`][convtree.ConversationState.changes]
turns it into a [`ChangeSet`][convtree.ChangeSet], the only thing a store needs to write an
incremental save; [`rebase()`][convtree.ConversationState.rebase] applies another writer's
saves underneath the pending changes. The merge rules live here and in the
state, not in the storage:

* appends commute: nodes added by two writers, on any branches, merge;
* a prune, an edit in place (``mark_changed``), a full save, or a change of
  the conversation metadata by both writers (to different values) conflict;
* a change that is already stored (a save retried after its outcome was
  unknown) is recognized and not applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ChangeSet", "SavedRevision"]


@dataclass(frozen=True)
class SavedRevision:
    """Where a state stands in a store: the stored revision it was loaded at or saved as.

    Attributes:
        store: The name of the store (a revision means something in one store only).
        number: The revision number; it goes up by one with every save.
        destructive_at: The last revision that pruned or changed existing nodes,
            or replaced the whole tree. Appends made after it can merge.
        metadata_at: The last revision that changed the conversation metadata.
        token: A random token the stored head carries (``None`` for heads written
            before tokens): a conversation deleted and saved again reaches the same
            revision numbers with other tokens.
    """

    store: str
    number: int
    destructive_at: int
    metadata_at: int
    token: str | None = None


@dataclass(frozen=True)
class ChangeSet:
    """The changes of one conversation since ``base``, ready to be written.

    Attributes:
        conversation_id: The conversation.
        base: The revision the changes apply to; ``None`` for a state that was
            never loaded from or saved to a store.
        full: The change set holds the whole tree (``nodes``/``edges`` are the
            complete document); always so when ``base`` is ``None``.
        nodes: Node records (the format's ``nodes`` items): the added nodes in
            the order they were added, then the nodes changed in place.
        edges: ``[parent_id, child_id]`` for every added node (every node when
            ``full``), parents before children, in sibling order.
        added: Ids of the added nodes, in order.
        changed: Ids of stored nodes changed in place (``mark_changed``).
        removed: Ids of stored nodes pruned.
        metadata_changed: The conversation metadata differs from ``base``'s.
        head: The document's top-level fields (everything but nodes and edges).
    """

    conversation_id: str
    base: SavedRevision | None
    full: bool
    nodes: tuple[dict[str, Any], ...]
    edges: tuple[list[str], ...]
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    metadata_changed: bool
    head: dict[str, Any]

    @property
    def destructive(self) -> bool:
        """Whether other writers' concurrent appends cannot merge with these changes."""
        return self.full or bool(self.changed) or bool(self.removed)

    @property
    def empty(self) -> bool:
        """No node was added, changed or removed (the head may still differ)."""
        return not (self.full or self.added or self.changed or self.removed)

    def saved_as(self, store: str, number: int) -> SavedRevision:
        """The revision these changes become once written as revision ``number`` of ``store``."""
        base = self.base if self.base is not None and self.base.store == store else None
        if base is None or self.full:
            return SavedRevision(store, number, number, number)
        return SavedRevision(
            store,
            number,
            number if self.destructive else base.destructive_at,
            number if self.metadata_changed else base.metadata_at,
        )
