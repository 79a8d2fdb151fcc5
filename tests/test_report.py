"""The lab report in a real browser: two real lab runs (the prefetch
interleaving, the poison's crashes and dead letter) written to one HTML file,
opened in Debian's headless Chromium through Playwright. The page must show
the verdict table and a timeline per run with a lane per worker thread and a
bar per delivery, load nothing from the network, and leave a screenshot in
artifacts/report-screenshot.png."""

import os
import shutil

import pytest

from lab.report import write_report

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Debian's chromium run headless and quiet: no sandbox (root in CI), no GPU,
# and none of the background traffic a browser makes on its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("the report test needs Debian's chromium (apt-get install chromium; ./run tests installs it "
                "when run as root) and Playwright for Python (pip install -r requirements.txt); "
                "never `playwright install`")


@pytest.fixture(scope="module")
def results(lab_run):
    return [lab_run("prefetch", "naive"), lab_run("poison", "robust")]


@pytest.fixture(scope="module")
def browser():
    # Fail, never skip: a CI without a browser must say what to install.
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright is not installed: {INSTALL_HINT}")
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        pytest.fail(f"no Chromium at {CHROMIUM}: {INSTALL_HINT}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_report_renders_verdicts_and_timelines(results, browser, artifacts):
    report = write_report(results, artifacts / "lab" / "report-test.html")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri())

    rows = page.locator("table.verdicts tbody tr")
    assert rows.count() == len(results)
    for index, result in enumerate(results):
        assert rows.nth(index).locator(".verdict").inner_text().strip() == result.verdict
        assert rows.nth(index).locator("td").first.inner_text().strip() == result.scenario
        assert_timeline(page.locator(f"#run-{index}"), result)

    page.screenshot(path=str(artifacts / "report-screenshot.png"), full_page=True)
    assert requests == [report.as_uri()], "the report must load nothing but itself"


def assert_timeline(section, result):
    assert section.get_attribute("data-scenario") == result.scenario
    svg = section.locator("svg.timeline")
    assert svg.count() == 1 and svg.is_visible()
    lanes = {(pid, thread) for _, _, _, _, pid, thread, *_ in result.events}
    assert svg.locator("g.lane").count() == len(lanes) == int(svg.get_attribute("data-lanes"))
    bars = svg.locator("g.bar")
    assert bars.count() == len(result.events) > 0
    # Each stored outcome (done, retrying, dead-lettered) has its own bars.
    for outcome in ("done", "retrying", "dead-lettered"):
        expected = sum(1 for event in result.events if event[9] == outcome)
        assert svg.locator(f"g.bar.{outcome}").count() == expected, outcome
    # A delivery left "running" is drawn as a crash, or open when its worker outlived the run.
    running = sum(1 for event in result.events if event[9] == "running")
    assert svg.locator("g.bar.crash").count() + svg.locator("g.bar.open").count() == running
    # Rendered, not just present: every bar is drawn inside the picture.
    frame = svg.bounding_box()
    for box in (bars.nth(i).bounding_box() for i in range(bars.count())):
        assert box["width"] > 0 and frame["x"] <= box["x"] <= frame["x"] + frame["width"]
