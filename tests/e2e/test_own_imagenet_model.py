"""Issue 25's own-model line in a real browser: a 224x224 ImageNet-class model uploaded as a .pt2 (mobilenet_v3_small,
random but data-initialized weights: depthwise convs, SE blocks, hard-swish) on an ImageNet-style image folder goes
through the Graph page, the Diagnose page and the what-if editor in English, then the same pages in Korean through
the sidebar's toggle. Small on purpose (32 images): it checks that the pages work on such a model, not its numbers.
Screenshots go to logs/."""

import pytest
import torch
import torchvision
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, expect_at_least, expect_no_exception, upload_and_load, wait_idle
from tests.helpers import data_initialized, image_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGES = 32


def _shot(page, name: str) -> None:
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / f"e2e-own224-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    """(the .pt2 file, the image folder): 4 synset classes x 8 JPEGs of mixed sizes."""
    from qcore.zoo.data import load_image_folder
    from qcore.zoo.preprocess import preset

    root = tmp_path_factory.mktemp("own224")
    folder = image_folder(root / "images", n_per_class=IMAGES // 4, labeled=False)  # scored by agreement with FP32
    x = preset("imagenet", (3, 224, 224))(load_image_folder(folder, 256).images)
    torch.manual_seed(0)
    with torch.no_grad():
        net = data_initialized(torchvision.models.mobilenet_v3_small(), x)
    program = torch.export.export(net, (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, root / "small224.pt2")
    return root / "small224.pt2", folder


def _load(page, app_url: str, path, folder) -> None:
    page.goto(f"{app_url}/?lang=en")
    expect(page.get_by_text("Your own model or images")).to_be_visible(timeout=180_000)
    wait_idle(page)
    sidebar = page.get_by_test_id("stSidebar")
    for label, value in (("Dataset", f"imagefolder:{folder}"), ("Calibration images", str(IMAGES)),
                         ("Evaluation images", str(IMAGES))):
        box = sidebar.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        wait_idle(page)
    # the input shape is left blank: the .pt2 fixes C, H, W (only its batch is dynamic), so it is read from the file
    expect(page.get_by_label("Input shape C,H,W (.pt2/.onnx)", exact=True)).to_have_value("")
    upload_and_load(page, path, page.get_by_role("heading", name="user:small224.pt2"), timeout_ms=300_000)
    wait_idle(page)
    expect(page.get_by_text("Format: pt2. Input 3x224x224")).to_be_visible()  # the shape the file declares
    expect_no_exception(page)


def _go(page, nav: str, heading: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(nav, exact=True).click()
    expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=120_000)
    wait_idle(page)


def _graph(page) -> None:
    _go(page, "Graph", "Model graph")
    page.get_by_role("button", name="Build the graph").click()
    expect_at_least(page.get_by_test_id("stPlotlyChart"), 3, timeout_ms=600_000)
    wait_idle(page)
    expect_no_exception(page)
    _shot(page, "graph-en")


def _diagnose(page) -> None:
    _go(page, "Diagnose", "Diagnose")
    page.get_by_test_id("stForm").get_by_label("Evaluation images", exact=True).fill("50")
    page.get_by_role("button", name="Run diagnosis").click()
    expect(page.get_by_role("heading", name="Causes, worst layer first")).to_be_visible(timeout=600_000)
    wait_idle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Weights only")).to_be_visible(timeout=60_000)
    expect_no_exception(page)
    _shot(page, "diagnose-en")


def _whatif(page) -> None:
    _go(page, "Calibration", "Calibration explorer")
    page.get_by_label("Evaluation images", exact=True).last.fill("50")  # the form's least; the folder has 32
    page.get_by_role("button", name="Run calibration").click()
    expect(page.get_by_role("heading", name="One layer")).to_be_visible(timeout=600_000)
    wait_idle(page)
    page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Layer", exact=True)).click()
    page.keyboard.type("classifier.3")
    page.keyboard.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Open the what-if editor").click()
    expect(page.get_by_text("Layer output SQNR")).to_be_visible(timeout=600_000)
    wait_idle(page)
    clip_max = page.get_by_label("Clip max", exact=True)
    clip_max.fill("1")
    clip_max.press("Enter")
    wait_idle(page)
    expect(page.get_by_text("(fixed)").first).to_be_visible(timeout=300_000)
    expect_no_exception(page)
    _shot(page, "whatif-en")


def test_graph_diagnose_and_whatif_on_an_own_224_pt2_in_english_and_korean(app_url, page, own_model):
    path, folder = own_model
    _load(page, app_url, path, folder)
    _graph(page)
    _diagnose(page)
    _whatif(page)

    page.get_by_test_id("stSidebar").get_by_text("한국어", exact=True).click()
    expect(page.get_by_text("레이어 출력 SQNR").first).to_be_visible(timeout=300_000)  # the what-if editor, in Korean
    wait_idle(page)
    expect_no_exception(page)
    _shot(page, "whatif-ko")
    _go(page, "그래프", "모델 그래프")
    expect_at_least(page.get_by_test_id("stPlotlyChart"), 3, timeout_ms=300_000)  # the same graph, not rebuilt
    wait_idle(page)
    expect_no_exception(page)
    _shot(page, "graph-ko")
    _go(page, "원인 진단", "원인 진단")
    expect(page.get_by_role("heading", name="원인 (가장 나쁜 레이어부터)")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stMetric").filter(has_text="가중치만 양자화")).to_be_visible(timeout=60_000)
    expect_no_exception(page)
    _shot(page, "diagnose-ko")
