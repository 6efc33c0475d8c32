"""The deployed shim's /healthz: what the load balancer's target group checks."""

import asyncio
import urllib.error
import urllib.request

import yaml

from beamjobs.dashboard.server import start_dashboard
from tests.processes import ROOT, free_port


def _get(url: str) -> tuple[int, str]:
    """The status and, for /healthz, the text of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode() if "healthz" in url else ""
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode() if "healthz" in url else ""


def test_healthz_answers_as_the_shims_health_says_and_serves_no_pages():
    health = {"now": (True, "ok")}

    async def check() -> list[tuple[int, str]]:
        runner, port = await start_dashboard(
            f"localhost:{free_port()}", "127.0.0.1", 0, lambda: health["now"], pages=False
        )
        try:
            base = f"http://127.0.0.1:{port}"
            answers = [await asyncio.to_thread(_get, f"{base}/healthz")]
            answers.append(await asyncio.to_thread(_get, f"{base}/"))
            answers.append(await asyncio.to_thread(_get, f"{base}/api/jobs"))
            health["now"] = (False, "stopping")
            answers.append(await asyncio.to_thread(_get, f"{base}/healthz"))
            return answers
        finally:
            await runner.cleanup()

    assert asyncio.run(check()) == [(200, "ok\n"), (404, ""), (404, ""), (503, "stopping\n")]


def test_the_target_group_checks_healthz_on_the_shims_health_port():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    group = template["Resources"]["ShimTargetGroup"]["Properties"]
    assert (group["HealthCheckProtocol"], group["HealthCheckPath"]) == ("HTTP", "/healthz")
    assert group["HealthCheckPort"] == "8098"
