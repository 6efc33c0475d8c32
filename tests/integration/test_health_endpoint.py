"""The deployed shim's /healthz: what the load balancer's target group checks."""

import asyncio
import urllib.error
import urllib.request

import yaml

from beamjobs.dashboard.server import start_dashboard
from tests.processes import ROOT, free_port


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_healthz_answers_200_while_serving_503_after_and_serves_no_pages():
    serving = {"now": True}

    async def check() -> list[int]:
        runner, port = await start_dashboard(
            f"localhost:{free_port()}", "127.0.0.1", 0, lambda: serving["now"], pages=False
        )
        try:
            base = f"http://127.0.0.1:{port}"
            answers = [await asyncio.to_thread(_get, f"{base}/healthz")]
            answers.append(await asyncio.to_thread(_get, f"{base}/"))
            answers.append(await asyncio.to_thread(_get, f"{base}/api/jobs"))
            serving["now"] = False
            answers.append(await asyncio.to_thread(_get, f"{base}/healthz"))
            return answers
        finally:
            await runner.cleanup()

    assert asyncio.run(check()) == [200, 404, 404, 503]


def test_the_target_group_checks_healthz_on_the_shims_health_port():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    group = template["Resources"]["ShimTargetGroup"]["Properties"]
    assert (group["HealthCheckProtocol"], group["HealthCheckPath"]) == ("HTTP", "/healthz")
    assert group["HealthCheckPort"] == "8098"
