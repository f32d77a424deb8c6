"""The liveness and readiness probes answer while every thread of the default executor is busy
(big pages being parsed, rendered and kept): their blocking reads have a thread of their own, so
a kubelet never takes a busy worker for a hung one."""

import asyncio
import threading
from pathlib import Path

from tests.unit.asgi import running_app

BUSY = 64  # more than the default executor's threads (at most 32)


async def test_probes_answer_while_the_default_executor_is_busy(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\ndirectory = "{tmp_path / "cache"}"\n'
        '[gitlab]\nurl = "https://gitlab.example.com"\ntoken = "glpat-probe"\n'
        '[[sources]]\nname = "platform"\ngitlab_project = "acme/platform"\n'
    )
    async with running_app(config) as client:
        release = threading.Event()
        loop = asyncio.get_running_loop()
        busy = [loop.run_in_executor(None, release.wait, 60) for _ in range(BUSY)]
        try:
            health = await asyncio.wait_for(client.get("/healthz"), 20)
            ready = await asyncio.wait_for(client.get("/readyz"), 20)
            assert not any(b.done() for b in busy)  # answered with every thread still busy
        finally:
            release.set()
            await asyncio.gather(*busy)
    assert (health.status_code, health.text) == (200, "ok\n")
    assert ready.status_code in (200, 503) and "ready" in ready.json()
