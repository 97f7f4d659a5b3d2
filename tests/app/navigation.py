"""The pages app.py's navigation lists, read from its source, so tests that visit every page also cover a
page added later without being edited."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app.py"


@dataclass(frozen=True)
class NavPage:
    script: str  # "views/calibration.py"
    title: str  # the English msgid of its navigation title, t("...") in app.py
    default: bool

    @property
    def url_path(self) -> str:
        """Streamlit's URL for the page: the default page is the app's root, the others their file's stem."""
        return "" if self.default else Path(self.script).stem


def app_pages() -> list[NavPage]:
    """Every st.Page(...) call in app.py, in order."""
    found = []
    for node in ast.walk(ast.parse(APP.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page":
            kw = {k.arg: k.value for k in node.keywords}
            title = kw["title"].args[0].value if isinstance(kw.get("title"), ast.Call) else kw["title"].value
            default = isinstance(kw.get("default"), ast.Constant) and kw["default"].value is True
            found.append(NavPage(node.args[0].value, title, default))
    return sorted(found, key=lambda p: p.script)


def routed(script: str, lang: str, **state):
    """An AppTest of `script` that runs through app.py (navigation, sidebar, ?lang=) as a browser's visit does:
    the page scripts live in views/, so Streamlit has no pages-folder routing that could run a page bare."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=300)
    for key, value in state.items():
        at.session_state[key] = value
    at.query_params["lang"] = lang
    return at.switch_page(script).run()
