"""The report as a reader gets it: reports/report.html of the sandbox's `dvc repro`, opened in headless
Chromium; the DVC views of the same run (`dvc metrics show`, `dvc plots show`); and the MLflow UI over
the run's store, as the README's "Compare experiments" walk-through shows it (the screenshot there is
this test's, written to $LORAMERGE_SCREENSHOT_DIR when that is set).

Chromium is Debian's (`make test` installs the package `chromium` when apt can), driven by
Playwright without any browser download of its own; without Chromium the browser test is
skipped with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loramerge.server import free_port
from tests.helpers import REPORT_SECTIONS, serving
from tests.sandbox import run, tiny_params

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOT_DIR = "LORAMERGE_SCREENSHOT_DIR"
"""Where the MLflow UI test also saves its screenshot (e.g. docs/images for the README); a temp folder otherwise."""


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium, or a skip saying what is missing (requested before `repro`, so a skip costs no pipeline run)."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"Chromium is not installed at {CHROMIUM} (Debian package `chromium`; `make test` installs it when apt is available)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_FLAGS)
        yield chromium
        chromium.close()


def test_the_report_opens_in_chromium_with_every_figure_loaded_and_the_headline_table(browser, repro):
    page = browser.new_page()
    page.goto((repro / "reports" / "report.html").as_uri(), wait_until="load")
    widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
    methods = tiny_params()["merge"]["methods"]
    assert len(widths) == 2 * len(methods) + 2, (
        "a heat-map and a similarity figure per method, the per-task bars and the curve over pairs and the triple"
    )
    assert all(width > 0 for width in widths), (
        f"figures that did not load: {[i for i, w in enumerate(widths) if not w]}"
    )
    headline = page.locator("table#headline-table")
    assert headline.count() == 1 and headline.locator("td").first.inner_text() in methods
    order = page.eval_on_selector_all("section", "sections => sections.map(s => s.id)")
    assert order == REPORT_SECTIONS
    assert "adapters on dissimilar data merge better" in page.locator("#similarity").inner_text(), "the verdict"
    page.close()


def test_dvc_metrics_show_has_each_methods_headline_numbers_and_the_pipelines(repro):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repro).stdout)
    files = next(iter(shown.values()))["data"]
    for method in tiny_params()["merge"]["methods"]:
        numbers = files[f"reports/headline/{method}.json"]["data"]
        assert set(numbers) == {"pair_acc", "triple_acc", "pair_gain", "triple_gain"} and 0 < numbers["pair_acc"] <= 2
    assert 0 < files["reports/headline/pipeline.json"]["data"]["single_acc"] <= 1
    assert not any(path.startswith("metrics/") for path in files), "detailed files are outputs, not DVC metrics"


def test_dvc_plots_show_renders_the_merge_bars_every_figure_and_a_confusion_matrix_per_task(repro):
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repro).stdout)
    assert not shown.get("errors"), shown.get("errors")
    plots, params = shown["data"], tiny_params()
    for method in params["merge"]["methods"]:
        (bars,) = plots[f"reports/tables/normalized_accuracy/{method}.csv"]
        assert {row["combination"] for row in bars["content"]["data"]["values"]} == {
            *params["pairs"],
            *params["triples"],
        }
        assert plots[f"reports/figures/heatmap_{method}.png"][0]["type"] == "image"
    for task in params["tasks"]:
        (confusion,) = plots[f"metrics/predictions/{task}.csv"]
        assert len(confusion["content"]["data"]["values"]) == 24  # one row per test example
    rendered = run(["dvc", "plots", "show", "-o", "dvc_plots"], repro)
    assert (repro / "dvc_plots" / "index.html").stat().st_size > 1000, rendered.stdout


def test_the_mlflow_ui_shows_the_stage_runs_grouped_by_repro_with_the_data_each_read(browser, repro, tmp_path):
    """`mlflow server` on the run's own store; the experiment opens on its training runs (not the GenAI overview),
    Group by -> repro_id gathers one `dvc repro`'s stage runs, and the Dataset and Source columns are filled."""
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    store, port = f"sqlite:///{repro / 'mlflow.db'}", free_port()
    experiment = MlflowClient(store).get_experiment_by_name("loramerge").experiment_id
    arguments = ["server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", store, "--workers", "1"]
    with serving(arguments, port, store, repro) as log:
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs", wait_until="load")
        first_run = page.get_by_role("link", name="train@emotion", exact=True)
        try:
            first_run.wait_for(timeout=60_000)
        except PlaywrightTimeout:  # once: a page whose first requests stalled on a loaded machine
            page.reload(wait_until="load")
            try:
                first_run.wait_for(timeout=60_000)
            except PlaywrightTimeout:
                pytest.fail(
                    f"the runs table shows no train@emotion after two loads of a minute; the page reads"
                    f" {page.inner_text('body')[:1500]!r}; the server's log ends {log.read_text()[-2000:]}"
                )
        assert page.get_by_text("Training runs", exact=True).count() >= 1, "a model-training experiment"
        if page.locator("[aria-label='Close']").count():  # MLflow's assistant panel, beside the table
            page.locator("[aria-label='Close']").first.click()
        page.get_by_role("button", name="Group by").click()
        page.locator("[role=menu]").first.get_by_text("repro_id", exact=True).click()
        page.keyboard.press("Escape")
        page.get_by_text("Group:").first.wait_for(timeout=30_000)
        assert page.get_by_text("emotion/train").count() >= 1, "the Dataset column names the split a run read"
        assert page.get_by_text("dvc.yaml:").count() >= 1, "the Source column names the DVC stage"
        folder = Path(os.environ.get(SCREENSHOT_DIR) or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / "mlflow-runs-grouped.png"))
        assert (folder / "mlflow-runs-grouped.png").stat().st_size > 10_000
        page.close()
