"""The console in a real browser (Debian's headless Chromium through
Playwright, as tests/test_report.py drives it) against a real gunicorn and
real workers with API_TOKEN set: an operator logs in, watches the progress
bars of jobs submitted through the API reach 100 %, cancels a running job,
replays a dead letter once the fix is out and sees its job done. The page
loads nothing but the server's own files. Screenshots land in artifacts/."""

import re

import pytest
from playwright.sync_api import expect

from harness import Stack, queue_depth, wait_for
from tests.api_helpers import TOKEN
from tests.e2e_helpers import create_user, submit_async, unique
from tests.test_report import browser  # noqa: F401 (the fixture: Debian's chromium, never a download)

ENV = {
    "PASSWORD_HASH_COST": "1024",
    "FOLLOWERS_PER_MESSAGE": "10",
    "HEARTBEAT_INTERVAL_S": "1",
    "FAULT_UNIT_DELAY_MS": "100",  # slow enough to watch a bar move and to cancel a job while it runs
    "FAULT_RAISE_ON_LOGIN": "bad_#4",  # one unit dead-lettered...
    "MAX_RETRIES": "0",  # ...at once
}


@pytest.fixture(scope="module")
def stack():
    with Stack("console_browser", env=ENV, processes=1, threads=4, api_token=TOKEN,
               workers_module="lab.workers") as stack:
        stack.reset()
        stack.start()
        yield stack


def row(page, job_id):
    return page.locator(f'table.jobs tr[data-job-id="{job_id}"]')


def test_an_operator_watches_cancels_and_replays(stack, browser, artifacts):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    foreign = []
    page.on("request", lambda request: None if request.url.startswith(stack.url) or request.url.startswith("data:")
            else foreign.append(request.url))

    # Log in: the console asks for the token once, then keeps its session.
    page.goto(f"{stack.url}/console/jobs")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.fill("input[name=token]", "not the token")
    page.click("form.login button")
    expect(page.locator("p.error")).to_contain_text("not the server's API_TOKEN")
    page.fill("input[name=token]", TOKEN)
    page.click("form.login button")
    expect(page).to_have_url(f"{stack.url}/console/jobs")
    # It polls every second, less often when a page takes the server long to build.
    assert page.evaluate("() => [nextPollDelay(1000, 5), nextPollDelay(1000, 350)]") == [1000, 3150]

    # Jobs submitted through the API appear on the open page and their bars fill up to 100 %.
    page.evaluate("""() => {
        window.percentsSeen = new Set();
        const rows = document.querySelector("table.jobs tbody");
        new MutationObserver(() => rows.querySelectorAll('[data-field="percent"]').forEach(
            (percent) => window.percentsSeen.add(percent.textContent))).observe(rows, {subtree: true, childList: true});
    }""")
    author = create_user(stack, unique("op"))
    jobs = [submit_async(stack, author, unique("fan"), 400)["jobId"] for _ in range(2)]  # 2 s of work
    for job_id in jobs:
        expect(row(page, job_id)).to_be_visible(timeout=10_000)
    page.wait_for_function("() => [...window.percentsSeen].some((text) => !['0 %', '100 %'].includes(text))")
    table = page.locator("table.jobs").bounding_box()  # the page down to its table: docs/console.png is one
    page.screenshot(path=str(artifacts / "console-jobs-running.png"),
                    clip={"x": 0, "y": 0, "width": 1280, "height": table["y"] + table["height"] + 24})
    for job_id in jobs:
        expect(row(page, job_id).locator('[data-field="percent"]')).to_have_text("100 %", timeout=30_000)
        expect(row(page, job_id).locator('[data-field="status"]')).to_have_text("done")
        assert row(page, job_id).locator("progress").evaluate("bar => bar.value === bar.max")
        assert row(page, job_id).locator('[data-field="created"]').inner_text() == "400"
    page.screenshot(path=str(artifacts / "console-jobs-done.png"), full_page=True)

    # A long job is cancelled from its page while it runs: its bar stops short of 100 %.
    long_job = submit_async(stack, author, unique("long"), 1000)["jobId"]  # 2.5 s of work
    page.goto(f"{stack.url}/console/jobs/{long_job}")
    expect(page.locator('h1 [data-field="status"]')).to_have_text("running", timeout=20_000)
    page.click("form.cancel button")
    expect(page.locator("p.notice")).to_contain_text(f"Job {long_job} is cancelled")
    expect(page.locator('h1 [data-field="status"]')).to_have_text("cancelled")
    expect(page.locator("form.cancel")).to_be_hidden()
    wait_for(lambda: queue_depth(stack.queue_name) == 0, timeout=30, what="the cancelled job's units skipped")
    cancelled = stack.get(f"/api/v1/jobs/{long_job}").json()
    assert cancelled["status"] == "cancelled" and 0 < cancelled["created"] < 1000
    assert cancelled["created"] == 10 * cancelled["messages"]["done"]  # no unit applied halfway
    page.reload()
    assert page.locator('[data-field="percent"]').inner_text() != "100 %"
    page.screenshot(path=str(artifacts / "console-job-cancelled.png"), full_page=True)

    # A unit is dead-lettered; after the fix the operator replays it and sees its job done.
    bad_job = submit_async(stack, author, "bad", 30)["jobId"]
    assert stack.wait_job(bad_job)["status"] == "failed"
    wait_for(lambda: stack.get("/api/v1/dead-letters").json()["total"] == 1, timeout=10, what="the dead letter")
    stack.workers.stop()
    stack.env.pop("FAULT_RAISE_ON_LOGIN")  # the fix is deployed
    stack.start_workers()
    stack.wait_workers_ready()
    page.goto(f"{stack.url}/console/dead-letters")
    letter = page.locator("table.dead-letters tbody tr")
    expect(letter).to_have_count(1)
    expect(letter.locator("td.reason")).to_contain_text("injected error on follower bad_#4")
    page.screenshot(path=str(artifacts / "console-dead-letters.png"), full_page=True)
    letter.locator("button", has_text="Replay").click()
    expect(page.locator("p.notice")).to_contain_text("is back in the work queue")
    expect(page.locator("table.dead-letters")).to_have_count(0)
    page.goto(f"{stack.url}/console/jobs/{bad_job}")
    expect(page.locator('h1 [data-field="status"]')).to_have_text("done", timeout=20_000)
    expect(page.locator('[data-field="percent"]')).to_have_text("100 %")
    expect(page.locator('[data-field="errors"]')).to_have_text("none")
    assert stack.get(f"/api/v1/jobs/{bad_job}").json()["created"] == 30
    page.reload()
    expect(page.locator("svg.timeline rect.bar.dead-lettered")).to_have_count(1)  # the first delivery, kept
    page.screenshot(path=str(artifacts / "console-job-replayed.png"), full_page=True)

    # The overview: the queue, the workers' heartbeats and the throughput they make.
    page.goto(f"{stack.url}/console")
    worker = page.locator("table.workers tbody tr", has_text="alive")
    expect(worker).to_have_count(1, timeout=10_000)
    expect(page.locator(f'tr[data-queue="{stack.queue_name}"] [data-field="consumers"]')).to_have_text("1",
                                                                                                       timeout=15_000)
    submit_async(stack, author, unique("more"), 400)
    # Some point of the graph above its floor: units done per second, from the heartbeats.
    page.wait_for_function("""() => document.querySelector('[data-field="throughput"]').getAttribute("points")
        .split(" ").some(point => parseFloat(point.split(",")[1]) < 117)""", timeout=15_000)
    page.screenshot(path=str(artifacts / "console-overview.png"), full_page=True)

    # Log out: the session ends.
    page.click("form.logout button")
    expect(page).to_have_url(f"{stack.url}/console/login")
    page.goto(f"{stack.url}/console")
    expect(page).to_have_url(re.compile(r"/console/login"))
    assert foreign == [], "the console must load nothing from elsewhere"
