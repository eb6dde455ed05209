"""The HTML renderings in a real headless browser (Debian's chromium): what shows, what runs.

The page wraps convtree's HTML with a small script of the test's own that runs
after the tree: it records which rows the browser really displays (an active
path inside a closed ``<details>`` would not be) and whether any of the hostile
messages managed to run code. Chromium prints the DOM with those findings, and
takes a screenshot kept next to the test's temp files (and in $CONVTREE_SCREENSHOTS
when set) for a person to look at.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from convtree import ConversationState
from convtree.render import to_html

from .conftest import _unavailable

HOSTILE = [
    "<script>window.pwned = (window.pwned || 0) + 1</script>",
    '<img src=x onerror="window.pwned = (window.pwned || 0) + 1">',
    '"><svg onload="window.pwned = (window.pwned || 0) + 1">',
    "</details></div><script>window.pwned = 1</script>",
]

PROBE = """
<script>
  window.addEventListener('load', () => {
    const rows = [...document.querySelectorAll('.ct-active')];
    const shown = rows.filter(r => r.getClientRects().length > 0 && r.offsetParent !== null);
    document.body.dataset.active = rows.map(r => r.dataset.nodeId).join(',');
    document.body.dataset.shown = shown.map(r => r.dataset.nodeId).join(',');
    document.body.dataset.pwned = String(window.pwned || 0);
    document.body.dataset.images = String(document.images.length);
    document.body.dataset.scripts = String(document.scripts.length);
  });
</script>
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        _unavailable("chromium", FileNotFoundError("install Debian's chromium package"))
    assert found is not None
    return found


def _run(browser: str, page: Path, profile: Path, *args: str) -> str:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Body(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.body = dict(attrs)


def _hostile_tree() -> ConversationState:
    state = ConversationState("browser <check>", metadata={"title": "<b>x</b>"})
    state.add_message("system", "Be brief.")
    question = state.add_message("user", HOSTILE[0], branch_name='<i>"b"</i>')
    state.add_message("assistant", HOSTILE[1])
    state.add_message("user", "more")
    state.add_message("assistant", HOSTILE[2])
    state.switch_to(question)
    state.add_message("assistant", HOSTILE[3], branch_name="other")
    state.add_message(
        "assistant",
        None,
        tool_calls=[
            {"id": "c1", "type": "function", "function": {"name": "f<x>", "arguments": HOSTILE[0]}}
        ],
    )
    state.add_message("tool", HOSTILE[1], tool_call_id="c1")
    state.switch_to(state.get_path()[-3])  # the cursor inside a branch that is not the last
    state.switch_to(question)
    state.switch_to(state.children(question)[0], descend=True)
    return state


def test_the_tree_in_a_real_browser(tmp_path: Path) -> None:
    browser = _chromium()
    state = _hostile_tree()
    page = tmp_path / "tree.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>convtree</title></head>'
        f"<body>{to_html(state)}{state.diff(state.get_path()[-1], 'other')._repr_html_()}"
        f"{PROBE}</body></html>",
        "utf-8",
    )
    dom = _run(browser, page, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=3000")
    parser = _Body()
    parser.feed(dom)
    body = parser.body
    path_ids = [node.node_id for node in state.get_path()]
    assert body.get("data-pwned") == "0", "a message ran code"
    assert body.get("data-images") == "0"
    assert body.get("data-scripts") == "1"  # the probe, nothing else
    assert (body.get("data-active") or "").split(",") == path_ids
    assert (body.get("data-shown") or "").split(",") == path_ids  # not hidden in closed details
    assert html.escape(HOSTILE[0], quote=False) in dom  # shown as text

    shot = tmp_path / "tree.png"
    _run(browser, page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1000,900")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000  # something was drawn
    keep = os.environ.get("CONVTREE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "tree.png")
