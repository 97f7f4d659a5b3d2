"""Deep links into the Learn page: a diagnosis cause links to its topic's section (`?topic=ID`, the ids of
qcore.analysis.diagnosis_causes.LEARN_TOPICS), and the page scrolls to that section once it is drawn.

Streamlit gives a header an anchor (`anchor=`) but a page link cannot carry a `#fragment`, and the sections
below the first ones are drawn seconds later (measured topics), so a small script in a zero-height component
waits for the section's element and scrolls to it once.
"""

from __future__ import annotations

import json

import streamlit as st
import streamlit.components.v1 as components

__all__ = ["anchor", "scroll_to_requested_topic"]

WAIT_MS = 120_000  # how long the script waits for the section to be drawn


def anchor(topic: str) -> str:
    """The header anchor of a Learn topic (language-independent: the header text is translated)."""
    return f"topic-{topic}"


def scroll_to_requested_topic() -> None:
    """Scroll to the section the link asked for (`?topic=`), if any. The same component on every rerun is the
    same element, so it scrolls once, not at each rerun."""
    topic = st.query_params.get("topic")
    if not topic:
        return
    target = json.dumps(anchor(topic))
    components.html(f"""<script>
const started = Date.now();
const go = () => {{
  const el = window.parent.document.getElementById({target});
  if (el) {{ el.scrollIntoView({{block: "start"}}); return; }}
  if (Date.now() - started < {WAIT_MS}) setTimeout(go, 250);
}};
go();
</script>""", height=0)
