"""The docs build is strict: no Sphinx role is left where mkdocstrings would print it as text."""

from __future__ import annotations

import re

from .conftest import REPO

ROLE = re.compile(r":(?:meth|class|func|attr|data|mod|exc|obj|ref):`")


def test_no_sphinx_roles_in_docstrings_or_pages() -> None:
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in [*REPO.glob("src/**/*.py"), *REPO.glob("docs/**/*.md")]
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if ROLE.search(line)
    ]
    assert not found, "write [`name`][convtree.name] or a code span:\n" + "\n".join(found)


def test_the_docs_build_refuses_a_role_left_in_a_page() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("hooks", REPO / "tools" / "mkdocs_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)

    class Page:
        class file:
            src_path = "api.md"

    assert hooks.on_page_content("<p>fine</p>", Page()) == "<p>fine</p>"
    import pytest
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="Sphinx role"):
        hooks.on_page_content("<p>see :meth:<code>x</code></p>", Page())
