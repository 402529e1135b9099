"""Notebooks: stored without outputs, thin, and every one runs end to end at profile smoke."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_parameterized(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    src = params[0].source
    assert 'profile = "auto"' in src and "overrides = {}" in src and 'out_dir = ""' in src
    assert "def " not in "".join(c.source for c in code), "reusable code belongs in lib/attnlab"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run of every notebook through the command line (shared by the tests below)."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    r = subprocess.run([sys.executable, "-m", "attnlab", "run", "--profile", "smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_smoke_run_of_every_notebook(smoke_run):
    out = smoke_run
    manifest = json.loads((out / "manifest.json").read_text())
    for nb in NOTEBOOKS:
        d = out / nb.stem
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        assert {"notebook", "profile", "parameters", "results", "claims", "duration_s", "environment"} <= set(metrics)
        assert metrics["duration_s"] < 90, f"{nb.stem} smoke profile took {metrics['duration_s']} s"
        assert metrics["results"] and metrics["claims"]
        for c in metrics["claims"]:
            assert c["verdict"] in ("reproduced", "not reproduced", "inconclusive")
            assert {"id", "paper", "statement", "paper_value", "measured", "threshold"} <= set(c)
        assert list(d.glob("*.png")) and (d / f"{nb.stem}.ipynb").exists()
        assert manifest["notebooks"][nb.stem]["status"] == "completed"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "src=\"http" not in html
    assert (out / "claims.csv").read_text().count("\n") > 1
    assert (out / "report.md").exists()


def _browser():
    """Debian's chromium and chromedriver driven by selenium (nothing downloaded), or a skip saying why."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no chromium / chromedriver here (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2400"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.mark.slow
def test_report_as_rendered_in_a_browser(smoke_run):
    """report.html in headless Chromium: the summary counts equal claims.csv, every figure loads, the filter
    hides and shows rows; a screenshot goes into the run folder."""
    import pandas as pd
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    claims = pd.read_csv(smoke_run / "claims.csv")
    drv = _browser()
    try:
        drv.get((smoke_run / "report.html").as_uri())
        for cell in drv.find_elements(By.CSS_SELECTOR, "table.counts td[data-kind]"):
            kind, verdict = cell.get_attribute("data-kind"), cell.get_attribute("data-verdict")
            want = int(((claims["kind"] == kind) & (claims["verdict"] == verdict)).sum())
            assert int(cell.find_element(By.CSS_SELECTOR, ".count").text) == want, (kind, verdict)
        loaded = drv.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        n_figures = len(list(smoke_run.glob("*/*.png")))
        assert len(loaded) == n_figures and all(loaded), f"{loaded.count(False)} broken of {len(loaded)}"

        def visible() -> int:
            return sum(r.is_displayed() for r in drv.find_elements(By.CSS_SELECTOR, "#claims tr.claim"))

        assert visible() == len(claims)
        verdict = Select(drv.find_element(By.ID, "f-verdict"))
        for v in ("reproduced", "inconclusive"):
            verdict.select_by_value(v)
            assert visible() == int((claims["verdict"] == v).sum()), v
        verdict.select_by_value("")
        notebook = Select(drv.find_element(By.ID, "f-notebook"))
        notebook.select_by_value("02_lm_length_extrapolation")
        assert visible() == int((claims["notebook"] == "02_lm_length_extrapolation").sum())
        notebook.select_by_value("")
        assert visible() == len(claims)
        drv.find_element(By.CSS_SELECTOR, "#claims a").click()  # a row links to its notebook's section
        assert drv.execute_script("return location.hash").startswith("#nb-")
        drv.save_screenshot(str(smoke_run / "report.png"))
        assert (smoke_run / "report.png").stat().st_size > 10_000
    finally:
        drv.quit()
