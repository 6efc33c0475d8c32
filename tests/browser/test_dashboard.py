"""The dashboard as people use it: a job submitted with the Beam SDK shows up and finishes on
the list without a reload; its page shows its timeline, messages, counters (rising while it
runs) and graph (laid out to fit, its composites collapsing and expanding); Cancel from the page
stops a running job."""

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


def test_the_graph_expanded_has_one_node_per_transform(server, page, finished):
    page.goto(f"{server[1]}/jobs/{finished}")
    nodes = page.locator("#graph .node")
    expect(nodes.first).to_be_visible(timeout=TIMEOUT_MS)

    page.click('#graph .graph-controls button[title="expand every composite"]')

    expect(page.locator("#graph .node.collapsed")).to_have_count(0)
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
    page.goto(f"{dashboard}/?name=dashboard-fails")
    failure = page.locator(f'tr[data-job-id="{result._job_id}"] td.failure')
    expect(failure).to_contain_text("ValueError: not a number: 'two'", timeout=TIMEOUT_MS)
    screenshot(page, "jobs-list-failed")


def _seven_step_word_count(endpoint: str, output: str):
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=dashboard-seven"))
    _ = (
        pipeline
        | "Read lines" >> beam.Create(["the cat sat on the mat", "the dog ate the cat"])
        | "Split into words" >> beam.ParDo(user_code.CountWords())
        | "Lowercase" >> beam.Map(str.lower)
        | "Pair with one" >> beam.Map(lambda word: (word, 1))
        | "Group and sum" >> beam.CombinePerKey(sum)
        | "Format" >> beam.MapTuple(lambda word, count: f"{word}: {count}")
        | "Write" >> beam.io.WriteToText(output)
    )
    return pipeline.run()


_BOXES = """nodes => nodes.map(n => {
  const box = (e) => { const r = e.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  return {name: n.dataset.name, node: box(n.querySelector("rect")),
          labels: [...n.querySelectorAll("text")].map(box)};
})"""


def _overlap(a, b) -> bool:
    return (
        a["left"] < b["right"]
        and b["left"] < a["right"]
        and a["top"] < b["bottom"]
        and (b["top"] < a["bottom"])
    )


def _inside(inner, outer) -> bool:
    return (
        inner["left"] >= outer["left"] - 0.5
        and inner["right"] <= outer["right"] + 0.5
        and inner["top"] >= outer["top"] - 0.5
        and inner["bottom"] <= outer["bottom"] + 0.5
    )


@pytest.fixture(scope="module")
def seven_steps(server, tmp_path_factory):
    """A seven-step word count run to DONE: its job id."""
    output = tmp_path_factory.mktemp("seven") / "counts"
    result = _seven_step_word_count(server[0], str(output))
    assert result.wait_until_finish() == PipelineState.DONE
    return result._job_id


def test_a_seven_step_word_count_fits_the_page_with_no_label_overlapping(server, page, seven_steps):
    page.goto(f"{server[1]}/jobs/{seven_steps}")
    nodes = page.locator("#graph g.node")
    expect(nodes).to_have_count(7, timeout=TIMEOUT_MS)  # the steps written, composites closed
    expect(page.locator('#graph g.node[data-name="Format"] .elements')).to_have_text(
        re.compile(r"^7 out"), timeout=TIMEOUT_MS
    )
    screenshot(page, "job-graph")

    boxes = nodes.evaluate_all(_BOXES)
    graph = page.locator("#graph").bounding_box()
    assert [b["name"] for b in boxes] == [
        "Read lines",
        "Split into words",
        "Lowercase",
        "Pair with one",
        "Group and sum",
        "Format",
        "Write",
    ]
    for box in boxes:
        assert (
            graph["x"] <= box["node"]["left"]
            and box["node"]["right"] <= graph["x"] + graph["width"]
        ), f"{box['name']} is outside the page's width"
        for label in box["labels"]:
            assert _inside(label, box["node"]), f"a label of {box['name']} leaves its node"
    labels = [(box["name"], label) for box in boxes for label in box["labels"]]
    for index, (name, label) in enumerate(labels):
        for other_name, other in labels[index + 1 :]:
            assert not _overlap(label, other), f"labels of {name} and {other_name} overlap"
    # A layered graph, read from top to bottom: each step below the one it reads.
    tops = [box["node"]["top"] for box in boxes]
    assert tops == sorted(tops) and len(set(tops)) == 7


def test_a_composite_expands_and_collapses(server, page, seven_steps):
    page.goto(f"{server[1]}/jobs/{seven_steps}")
    nodes = page.locator("#graph g.node")
    expect(nodes).to_have_count(7, timeout=TIMEOUT_MS)
    composite = page.locator('#graph g.node.collapsed[data-name="Group and sum"]')
    inner = composite.evaluate("n => JSON.parse(n.dataset.steps).map(([, name]) => name)")
    assert len(inner) > 1 and all(name.startswith("Group and sum/") for name in inner)

    composite.click()

    box = page.locator('#graph g.composite[data-name="Group and sum"]')
    expect(box).to_be_visible()
    expect(nodes).to_have_count(7 - 1 + len(inner))
    drawn = nodes.evaluate_all("ns => ns.map(n => n.dataset.name)")
    assert set(inner) <= set(drawn)
    screenshot(page, "job-graph-expanded")

    box.locator(".composite-title").click()

    expect(nodes).to_have_count(7)
    expect(page.locator("#graph g.composite")).to_have_count(0)
    # And from the keyboard: a collapsed composite takes the focus, Enter opens it.
    page.locator('#graph g.node.collapsed[data-name="Group and sum"]').focus()
    page.keyboard.press("Enter")
    expect(nodes).to_have_count(7 - 1 + len(inner))


def test_zoom_and_pan_move_the_graph(server, page, seven_steps):
    page.goto(f"{server[1]}/jobs/{seven_steps}")
    first = page.locator('#graph g.node[data-name="Read lines"]')
    expect(first).to_be_visible(timeout=TIMEOUT_MS)
    width = first.bounding_box()["width"]

    page.click('#graph .graph-controls button[title="zoom in"]')
    assert first.bounding_box()["width"] == pytest.approx(width * 1.25, rel=0.02)

    page.locator("#graph").scroll_into_view_if_needed()
    before = first.bounding_box()
    drawing = page.locator("#graph svg").bounding_box()
    # Dragged from the graph's empty top-left corner.
    page.mouse.move(drawing["x"] + 10, drawing["y"] + 10)
    page.mouse.down()
    page.mouse.move(drawing["x"] + 70, drawing["y"] + 50, steps=4)
    page.mouse.up()
    after = first.bounding_box()
    assert (after["x"] - before["x"], after["y"] - before["y"]) == pytest.approx((60, 40), abs=1)

    page.click('#graph .graph-controls button[title="fit the graph to the page"]')
    assert first.bounding_box()["width"] == pytest.approx(width, rel=0.02)


def test_counters_rise_while_a_bundle_runs_and_stay_after_a_cancel(server, page):
    endpoint, dashboard = server
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=dashboard-counts"))
    _ = (
        pipeline
        | beam.Create(list(range(200)))
        | beam.Reshuffle()  # one bundle for all: counts come from its progress, not its end
        | "Count slowly" >> beam.ParDo(user_code.CountSlowly())
    )
    result = pipeline.run()
    page.goto(f"{dashboard}/jobs/{result._job_id}")
    counter = page.locator('tr[data-metric="progress:seen"] td').nth(3)
    expect(counter).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=TIMEOUT_MS)
    first = int(counter.inner_text())
    expect(page.locator("#state .state")).to_have_text("RUNNING")
    screenshot(page, "job-counting")

    page.wait_for_function(
        """([first]) => {
          const cell = document.querySelectorAll('tr[data-metric="progress:seen"] td')[3];
          return cell && Number(cell.textContent) > first;
        }""",
        arg=[first],
        timeout=TIMEOUT_MS,
    )
    expect(page.locator("#state .state")).to_have_text("RUNNING")  # still in its one bundle
    risen = int(counter.inner_text())

    page.click("#cancel")
    page.click("#confirm-cancel")
    expect(page.locator("#state .state")).to_have_text("CANCELLED", timeout=TIMEOUT_MS)
    with contextlib.suppress(RuntimeError):  # a cancelled job's wait raises
        result.wait_until_finish()
    page.reload()  # what is stored, read again
    expect(counter).to_have_text(re.compile(r"^\d+$"), timeout=TIMEOUT_MS)
    assert risen <= int(counter.inner_text()) < 200
