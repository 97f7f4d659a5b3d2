"""AppTest of the History page over a real history file."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from qcore.store import history
from tests.helpers import DEPLOY, STUDY

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/history.py").run()
    assert not at.exception
    return at


def test_empty_history_says_where_runs_come_from(private_history):
    at = _page()
    assert at.info and "No runs stored yet" in at.info[0].value


def test_runs_are_listed_filtered_and_exportable(private_history):
    history.record(DEPLOY)
    history.record(STUDY)
    at = _page()
    table = at.dataframe[0].value
    assert sorted(table["model"]) == ["fm_gelunet", "fm_resnet"]
    assert "int8_accuracy" in table.columns and "accuracy max A8" in table.columns
    assert [b.label for b in at.get("download_button")] == ["Export listed as CSV", "Export listed as JSON"]
    at.text_input[0].set_value("gelu").run()
    assert list(at.dataframe[0].value["model"]) == ["fm_gelunet"]
    at.multiselect[0].set_value(["deploy"]).run()
    assert at.info and "match the filters" in at.info[0].value
