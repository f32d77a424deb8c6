"""A flood of wrong passwords, 200 of them 40 at a time, against scrypt hashes: the flood gets 429s
(or 401s from many addresses), the user already verified keeps being answered meanwhile, and
nothing answers 5xx. Bounded in requests; no timing is asserted. The hash costs an eighth of the
default (4 MiB), so that the suite stays short on a loaded machine."""

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.passwords import hash_password
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve

TOKEN = "glpat-flood-reader"
PASSWORD = "the-right-password"
FLOOD, AT_ONCE = 200, 40
WHEEL = make_wheel("flood-pkg", "1.0")


@dataclass
class World:
    proxy: ProxyProcess
    file_url: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_token(TOKEN, read={11})
    double.add_package_file(11, "flood-pkg", "1.0", *WHEEL)
    extra = f"""
[server]
trusted_proxies = ["127.0.0.1"]

[auth]
anonymous_read = false
failed_logins_per_minute = 10

[[users]]
name = "ci"
password_hash = "{hash_password(PASSWORD, n=2**12)}"
"""
    with serve(double.app) as server:
        directory: Path = tmp_path_factory.mktemp("flood")
        sources = [{"name": "platform", "gitlab_project": 11}]
        proxy = start_proxy(write_config(directory, server.url, sources, token=TOKEN, extra=extra))
        try:
            digest = hashlib.sha256(WHEEL[1]).hexdigest()
            url = f"{proxy.url}/files/{digest}/{WHEEL[0]}"
            warm = httpx2.get(url, auth=("ci", PASSWORD), timeout=60)  # verified, and now cached
            assert warm.status_code == 200 and warm.content == WHEEL[1]
            yield World(proxy, url)
        finally:
            proxy.stop()


def _flood(
    world: World, guesses: int, headers_of, user_headers: dict[str, str] | None = None
) -> tuple[list[httpx2.Response], list[int], int]:
    """Run the flood; meanwhile the verified user downloads the cached file again and again.

    Returns the flood's answers, the verified user's statuses, and how many of those came
    while the flood was still running.
    """
    done = threading.Event()
    statuses: list[int] = []
    during = 0

    def verified_user() -> None:
        nonlocal during
        with httpx2.Client(auth=("ci", PASSWORD), headers=user_headers, timeout=120) as client:
            while not done.is_set():
                response = client.get(world.file_url)
                statuses.append(response.status_code)
                if not done.is_set():
                    during += 1
                    assert response.content == WHEEL[1]

    def guess(number: int) -> httpx2.Response:
        return httpx2.get(
            world.file_url,
            auth=("ci", f"wrong-password-{number}"),
            headers=headers_of(number),
            timeout=120,
        )

    user = threading.Thread(target=verified_user)
    user.start()
    try:
        with ThreadPoolExecutor(AT_ONCE) as pool:
            answers = list(pool.map(guess, range(guesses)))
    finally:
        done.set()
        user.join(timeout=120)
    return answers, statuses, during


def test_a_flood_from_one_address_gets_429_and_the_verified_user_is_answered(
    world: World,
) -> None:
    answers, statuses, during = _flood(world, FLOOD, lambda number: {})
    codes = [a.status_code for a in answers]
    assert set(codes) <= {401, 429}
    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) >= FLOOD // 2  # at most a burst and what was under way got a hash
    for answer in refused:
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.text.startswith("too many failed logins from this address: retry in ")
        assert answer.text.count("\n") == 1
    assert statuses and set(statuses) == {200}
    assert during >= 1
    assert "Traceback" not in world.proxy.log()


def test_a_flood_from_many_addresses_costs_hashes_but_the_verified_user_is_answered(
    world: World,
) -> None:
    # through the trusted reverse proxy, each guess from an address of its own: no limit holds,
    # every guess costs a hash in the proxy's own small pool (two waves: the suite stays short)
    guesses = 2 * AT_ONCE
    answers, statuses, during = _flood(
        world,
        guesses,
        lambda number: {"x-forwarded-for": f"10.7.0.{number + 1}"},
        user_headers={"x-forwarded-for": "10.6.0.1"},  # whatever the first flood left behind
    )
    assert [a.status_code for a in answers] == [401] * guesses
    assert statuses and set(statuses) == {200}
    assert during >= 1
    assert "Traceback" not in world.proxy.log()
