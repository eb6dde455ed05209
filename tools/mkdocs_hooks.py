"""mkdocs hooks: fail the build on what mkdocstrings would print literally.

Docstrings here are rendered by mkdocstrings (Markdown), not Sphinx: a role such as
``:meth:`x``` would show up as text. Write ``[`x()`][convtree.ConversationState.x]``
(a cross-reference) or a plain code span instead.
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.exceptions import PluginError

_ROLE = re.compile(r":(?:meth|class|func|attr|data|mod|exc|obj|ref):(?:<code>|`)")


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    """Refuse a page whose rendered HTML still holds a Sphinx role."""
    found = _ROLE.search(html)
    if found:
        start = max(found.start() - 40, 0)
        raise PluginError(
            f"{page.file.src_path}: a Sphinx role is left in the rendered docs "
            f"(...{html[start : found.end() + 40]}...); write [`name`][convtree.name] "
            "or a code span"
        )
    return html
