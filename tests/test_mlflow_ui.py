"""What a reviewer sees: the MLflow UI (a real `mlflow server` on loopback, headless Chromium)
shows a pipeline's parent run, its stage runs, their key metrics and the sample grid.

Screenshots go to the test's tmp path and, when set, to $TEST_ARTIFACTS.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, MlflowServer, tiny_params

pytestmark = pytest.mark.slow

GROUP = "airflow-manual__ui-review"
NEXT = "airflow-scheduled__night-2"
MODEL = "ui-student"
WAIT_S = 60


def _browser() -> tuple[str, str]:
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if chromium is None:
        pytest.skip("no chromium binary: install Debian's chromium and chromium-driver "
                    "(make test does it when run as root with apt-get)")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip(f"{chromium} found but no chromedriver: install Debian's chromium-driver")
    return chromium, driver


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1000"):
        options.add_argument(arg)
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


@pytest.fixture
def mlflow_server(tmp_path) -> Iterator[str]:
    server = MlflowServer(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def pipeline_runs(mlflow_server, tmp_path, monkeypatch) -> dict[str, str]:
    """A parent run with two nested stage runs, as the DAG makes them, through the server."""
    import mlflow

    from pipeline import tracking
    from pipeline.params import load_params

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, GROUP)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    params = load_params(tmp_path / "params.yaml")
    grid = tmp_path / "samples.png"
    Image.new("RGB", (128, 64), (200, 40, 40)).save(grid)  # teacher row / student row stand-in
    tags = {"stand_in_weights": "true", "profile": "test-tiny"}
    with tracking.stage_run("fetch_teacher", params.fetch_teacher, tags=tags, root=REPO) as run:
        run.log_metrics({"params": 1234567, "resolution": 32})
        teacher = run.run_id
    with tracking.stage_run("distill", params.distill, tags=tags, root=REPO) as run:
        run.log_metrics({"lpips_to_teacher_end": 0.4321, "images_per_second": 12.5})
        run.log_artifact(grid, "distill")
        run.update_pipeline_run({"distill_steps": 8, "distill_psnr_start": 12.5,
                                 "distill_psnr_end": 19.25}, params, {"profile": "test-tiny"}, [grid])
        distill = run.run_id
    client = mlflow.MlflowClient()
    parent = client.get_run(distill).data.tags["mlflow.parentRunId"]
    # the next night's run, to compare with
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, NEXT)
    with tracking.stage_run("distill", params.distill, tags=tags, root=REPO) as run:
        run.update_pipeline_run({"distill_steps": 8, "distill_psnr_start": 12.5,
                                 "distill_psnr_end": 20.75}, params, {"profile": "test-tiny"}, [])
        nxt = client.get_run(run.run_id).data.tags["mlflow.parentRunId"]
    # two versions of a registered student, decided by aliases as the export stage does
    client.create_registered_model(MODEL)
    for run_id in (parent, nxt):
        client.create_model_version(MODEL, f"runs:/{run_id}/summary", run_id=run_id)
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "candidate", "2")
    return {"experiment": client.get_run(parent).info.experiment_id, "parent": parent,
            "next": nxt, "fetch_teacher": teacher, "distill": distill}


def screenshot(driver, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / name))
    if os.environ.get("TEST_ARTIFACTS"):
        out = Path(os.environ["TEST_ARTIFACTS"]) / "mlflow_ui"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tmp_path / name, out / name)


def waiter(browser):
    """Waits up to WAIT_S for a condition; an element the React UI re-rendered between
    finding and reading it (stale) is retried, as a missing one is."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))


def test_the_mlflow_ui_shows_the_pipeline_run_its_stage_runs_metrics_and_sample_grid(
        browser, mlflow_server, pipeline_runs, tmp_path):
    from selenium.webdriver.common.by import By
    wait = waiter(browser)
    experiment = f"{mlflow_server}/#/experiments/{pipeline_runs['experiment']}"

    # The runs table: the parent run, expanded to show its stage runs.
    browser.get(f"{experiment}/runs")
    wait.until(lambda d: f"pipeline {GROUP}" in d.page_source)
    row = browser.find_element(By.CSS_SELECTOR, f"div[role=row][row-id='{pipeline_runs['parent']}']")
    row.find_element(By.CSS_SELECTOR, "div[role=gridcell][col-id*='Run Name'] button").click()
    for stage in ("fetch_teacher", "distill"):
        wait.until(lambda d, s=stage: d.find_elements(By.CSS_SELECTOR, f"div[role=row][row-id='{pipeline_runs[s]}']"))
    cells = browser.find_elements(By.CSS_SELECTOR, "div[role=gridcell][col-id*='Run Name']")
    names = {c.text.strip().splitlines()[-1] for c in cells if c.text.strip()}  # after the colour tag
    assert {f"pipeline {GROUP}", "fetch_teacher", "distill"} <= names, names
    screenshot(browser, tmp_path, "runs.png")

    # The pipeline run: its headline figures and its description (Markdown).
    browser.get(f"{experiment}/runs/{pipeline_runs['parent']}")
    shown = ("distill_psnr_end", "19.25", "Distilled 8 steps: PSNR to the teacher 12.50 -> 19.25 dB")
    wait.until(lambda d: all(s in d.find_element(By.TAG_NAME, "body").text for s in shown))
    screenshot(browser, tmp_path, "pipeline_run.png")

    # A stage run: its key metrics, its parent, the provenance tags.
    browser.get(f"{experiment}/runs/{pipeline_runs['distill']}")
    shown = ("lpips_to_teacher_end", "Parent run", f"pipeline {GROUP}", "git_commit")
    wait.until(lambda d: all(s in d.find_element(By.TAG_NAME, "body").text for s in shown))
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "0.4321" in text and "images_per_second" in text and "12.5" in text
    assert "Parent run" in text and f"pipeline {GROUP}" in text
    assert "stand_in_weights" in text and "git_commit" in text
    screenshot(browser, tmp_path, "distill_run.png")

    browser.get(f"{experiment}/runs/{pipeline_runs['fetch_teacher']}")
    wait.until(lambda d: "resolution" in d.find_element(By.TAG_NAME, "body").text)
    assert "1234567" in browser.find_element(By.TAG_NAME, "body").text

    # The sample grid, previewed from the artifact store through the server.
    browser.get(f"{experiment}/runs/{pipeline_runs['distill']}/artifacts/distill/samples.png")

    def grid_image(d):
        for img in d.find_elements(By.TAG_NAME, "img"):
            if img.get_attribute("src").startswith("blob:") and img.get_attribute("naturalWidth") == "128":
                return img
        return None

    image = wait.until(grid_image)
    assert image.get_attribute("naturalHeight") == "64" and image.is_displayed()
    screenshot(browser, tmp_path, "distill_samples.png")


def test_a_reviewer_compares_two_nightly_runs_and_sees_which_model_is_champion(
        browser, mlflow_server, pipeline_runs, tmp_path):
    import mlflow
    from selenium.webdriver.common.by import By

    from pipeline import tracking

    wait = waiter(browser)
    # The link `make mlflow-ui` prints: pipeline runs only, headline figures as columns.
    browser.get(tracking.headline_view_url(mlflow_server, pipeline_runs["experiment"]))

    def header_cells(d):
        return {c.text.strip() for c in d.find_elements(By.CSS_SELECTOR, "[role=columnheader]")}

    wait.until(lambda d: {"distill_psnr_end", "profile"} <= header_cells(d))
    rows = {r.get_attribute("row-id") for r in browser.find_elements(By.CSS_SELECTOR, "div[role=row][row-id]")}
    assert rows == {pipeline_runs["parent"], pipeline_runs["next"]}, rows  # no stage runs
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "19.25" in body and "20.75" in body and "test-tiny" in body
    screenshot(browser, tmp_path, "headline_view.png")

    ids = f'["{pipeline_runs["parent"]}","{pipeline_runs["next"]}"]'
    browser.get(f"{mlflow_server}/#/compare-runs?runs={ids}"
                f'&experiments=["{pipeline_runs["experiment"]}"]')
    shown = (f"pipeline {GROUP}", f"pipeline {NEXT}", "distill_psnr_end", "19.25", "20.75")
    wait.until(lambda d: all(s in d.find_element(By.TAG_NAME, "body").text for s in shown))
    screenshot(browser, tmp_path, "compare_runs.png")

    browser.get(f"{mlflow_server}/#/models/{MODEL}")
    shown = ("Version 1", "Version 2", "champion", "candidate")
    wait.until(lambda d: all(s in d.find_element(By.TAG_NAME, "body").text for s in shown))
    screenshot(browser, tmp_path, "registry.png")
    # the same facts through the client
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == pipeline_runs["parent"]
    runs = {r.info.run_name: r.data.metrics["distill_psnr_end"] for r in client.search_runs(
        [pipeline_runs["experiment"]], "tags.role = 'pipeline'")}
    assert runs == {f"pipeline {GROUP}": 19.25, f"pipeline {NEXT}": 20.75}
