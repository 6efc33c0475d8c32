"""The dashboard as people use it: a job submitted with the Beam SDK shows up and finishes on
the list without a reload; its page shows its timeline, messages, counters and graph; Cancel
from the page stops a running job."""

from __future__ import annotations

import contextlib
import re
import threading
import urllib.error
import urllib.request

import apache_beam as beam
import grpc
import pytest
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.runners.runner import PipelineState
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.e2e import user_code
from tests.e2e.conftest import EMBEDDED, options

TIMEOUT_MS = 60_000


def _word_count(endpoint: str, name: str, *, slow: bool = False):
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, f"--job_name={name}"))
    lines = pipeline | "Lines" >> beam.Create(["the cat sat", "the dog"])
    if slow:
        lines = lines | "Pause" >> beam.Map(user_code.sleep_a_moment)
    _ = (
        lines
        | "Split" >> beam.ParDo(user_code.CountWords())
        | "Count" >> beam.combiners.Count.PerElement()
    )
    return pipeline.run()


@pytest.fixture(scope="module")
def finished(server):
    """A word count run to DONE: its job id."""
    result = _word_count(server[0], "dashboard-count")
    assert result.wait_until_finish() == PipelineState.DONE
    return result._job_id


def test_a_submitted_job_appears_and_turns_done_without_a_reload(server, page):
    endpoint, dashboard = server
    page.goto(f"{dashboard}/?name=dashboard-live")
    expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
    page.evaluate("window.notReloaded = true")

    result = _word_count(endpoint, "dashboard-live", slow=True)
    row = page.locator(f'tr[data-job-id="{result._job_id}"]')
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row.locator(".state")).not_to_have_text("DONE")  # seen before the end
    screenshot(page, "jobs-list-running")
    expect(row.locator(".state")).to_have_text("DONE", timeout=TIMEOUT_MS)

    assert page.evaluate("window.notReloaded") is True
    assert result.wait_until_finish() == PipelineState.DONE
    screenshot(page, "jobs-list")


def test_the_job_page_shows_its_timeline_messages_and_counter(server, page, finished):
    page.goto(f"{server[1]}/jobs/{finished}")

    timeline = page.locator("#timeline .state")
    expect(timeline).to_have_text(["STOPPED", "STARTING", "RUNNING", "DONE"], timeout=TIMEOUT_MS)
    expect(page.locator("#messages .message").first).to_be_visible(timeout=TIMEOUT_MS)
    counter = page.locator('tr[data-metric="dashboard:words"]')
    expect(counter).to_be_visible(timeout=TIMEOUT_MS)
    # Kind, step, name, attempted, committed: five words counted.
    expect(counter.locator("td").nth(4)).to_have_text("5")
    expect(page.locator("#live")).to_have_text("ended", timeout=TIMEOUT_MS)
    screenshot(page, "job-page")


def test_messages_are_filtered_by_importance(server, page, finished):
    page.goto(f"{server[1]}/jobs/{finished}")
    messages = page.locator("#messages .message")
    expect(messages.first).to_be_visible(timeout=TIMEOUT_MS)
    shown = messages.evaluate_all("ms => ms.filter(m => !m.hidden).length")

    page.select_option("#importance", "JOB_MESSAGE_ERROR")

    assert shown > 0
    assert messages.evaluate_all("ms => ms.filter(m => !m.hidden).length") == 0


def _leaf_transforms(endpoint: str, job_id: str) -> set[str]:
    """The transforms that run: the leaves of the pipeline's tree, from its roots."""
    with grpc.insecure_channel(endpoint) as channel:
        answer = beam_job_api_pb2_grpc.JobServiceStub(channel).GetPipeline(
            api.GetJobPipelineRequest(job_id=job_id)
        )
    pipeline = answer.pipeline
    transforms = pipeline.components.transforms
    leaves, pending = set(), list(pipeline.root_transform_ids)
    while pending:
        transform_id = pending.pop()
        children = transforms[transform_id].subtransforms
        pending.extend(children)
        if not children:
            leaves.add(transform_id)
    return leaves


def test_the_graph_has_one_node_per_transform(server, page, finished):
    page.goto(f"{server[1]}/jobs/{finished}")
    nodes = page.locator("#graph .node")
    expect(nodes.first).to_be_visible(timeout=TIMEOUT_MS)

    drawn = nodes.evaluate_all("ns => ns.map(n => n.dataset.transformId)")

    assert sorted(drawn) == sorted(_leaf_transforms(server[0], finished))
    assert page.locator("#graph path.edge").count() >= len(drawn) - 1


def test_cancel_from_the_page_stops_a_running_job(server, page):
    endpoint, dashboard = server
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=dashboard-cancel"))
    _ = pipeline | beam.Create([1]) | beam.Map(user_code.sleep_long)
    result = pipeline.run()
    ended = threading.Event()

    def wait() -> None:
        with contextlib.suppress(RuntimeError):  # a cancelled job's wait raises
            result.wait_until_finish()
        ended.set()

    threading.Thread(target=wait, daemon=True).start()
    page.goto(f"{dashboard}/jobs/{result._job_id}")
    expect(page.locator("#state .state")).to_have_text("RUNNING", timeout=TIMEOUT_MS)

    page.click("#cancel")
    expect(page.locator("#confirm")).to_be_visible()
    screenshot(page, "job-cancel-confirmation")
    page.click("#confirm-cancel")

    expect(page.locator("#state .state")).to_have_text("CANCELLED", timeout=TIMEOUT_MS)
    assert ended.wait(60)
    assert result.state == PipelineState.CANCELLED
    page.goto(f"{dashboard}/?name=dashboard-cancel")
    row = page.locator(f'tr[data-job-id="{result._job_id}"] .state')
    expect(row).to_have_text("CANCELLED", timeout=TIMEOUT_MS)


def _status(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_health_and_the_guards_of_a_page_on_this_machine(server, finished):
    dashboard = server[1]
    assert _status(f"{dashboard}/healthz") == 200
    # Another site's page cannot cancel (no custom header without consent), nor a name that
    # resolves here (DNS rebinding) read anything.
    assert _status(f"{dashboard}/api/jobs/{finished}/cancel", method="POST") == 403
    assert _status(f"{dashboard}/api/jobs", headers={"Host": "attacker.example"}) == 421
    assert _status(f"{dashboard}/api/jobs/no-such-job") == 404
    assert _status(f"{dashboard}/api/jobs?state=SLEEPING") == 400


def test_times_are_iso_dates_whatever_the_locale_and_the_page_has_its_icon(server, page, finished):
    page.goto(f"{server[1]}/?name=dashboard-count")
    row = page.locator(f'tr[data-job-id="{finished}"]')
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    # (Playwright's Chromium speaks en-US, whose own dates read 12/7/2026, 03:09:00.)
    expect(row.locator("td").nth(3)).to_have_text(
        re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
    )
    icon = page.locator('link[rel="icon"]').get_attribute("href")
    with urllib.request.urlopen(f"{server[1]}{icon}", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("image/svg+xml")
        assert b"<svg" in answer.read()


def test_a_failed_job_has_a_banner_saying_why_and_its_step_marked(server, page):
    endpoint, dashboard = server
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=dashboard-fails"))
    lines = pipeline | "Lines" >> beam.Create(["1", "two"])
    _ = lines | "Parse" >> beam.Map(user_code.parse_number)
    result = pipeline.run()
    with pytest.raises(RuntimeError, match="not a number"):  # as the SDK says a job failed
        result.wait_until_finish()
    assert result.state == PipelineState.FAILED
    page.goto(f"{dashboard}/jobs/{result._job_id}")
    banner = page.locator("#job-failure")
    expect(banner).to_be_visible(timeout=TIMEOUT_MS)
    expect(banner).to_contain_text("ValueError: not a number: 'two'")
    expect(banner).to_contain_text("user_code.py")
    expect(page.locator("#graph g.node.failed")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.locator("#graph g.node.failed")).to_have_attribute("data-name", "Parse")
    screenshot(page, "job-failed")
