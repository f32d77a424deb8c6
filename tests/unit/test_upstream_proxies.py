"""The environment's proxies as the upstream client mounts them: HTTP(S)_PROXY and ALL_PROXY in
either case, NO_PROXY as curl and httpx2 read it, entries that are no host ignored."""

import httpx2
import pytest

from gitlab_pypi_proxy.sources.upstream_proxies import environment_proxies

PROXIES = {"http://": "http://proxy:3128", "https://": "http://proxy:3128"}


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    monkeypatch.setenv("https_proxy", "proxy:3128")  # no scheme: http:// is meant
    return monkeypatch


def test_the_proxies_each_scheme_goes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    assert environment_proxies() == PROXIES
    monkeypatch.setenv("ALL_PROXY", "socks5://gateway:1080")
    assert environment_proxies() == {**PROXIES, "all://": "socks5://gateway:1080"}


@pytest.mark.parametrize(
    ("no_proxy", "direct"),
    [
        ("gitlab.example.com", ["all://*gitlab.example.com"]),
        (".example.com", ["all://*.example.com"]),
        ("*.example.com", ["all://*.example.com"]),
        ("localhost", ["all://localhost"]),
        ("127.0.0.1", ["all://127.0.0.1"]),
        ("10.0.0.0/8", ["all://10.0.0.0/8"]),
        ("::1", ["all://[::1]"]),
        ("fe80::/10", ["all://[fe80::]/10"]),
        ("[::1]", ["all://[::1]"]),
        ("http://intranet:8080", ["http://intranet:8080"]),
        (" a.org , b.org ,, ", ["all://*a.org", "all://*b.org"]),
        ("a/b", []),  # a path: no host
        ("10.0.0.0/abc", []),
        ("1.2.3.4/33", []),
        ("::1/129", []),
        ("xn--nxasmq6b.com", []),  # a label httpx2 cannot take: ignored, not a crash
    ],
)
def test_no_proxy_entries(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, direct: list[str]
) -> None:
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert environment_proxies() == {**PROXIES, **dict.fromkeys(direct)}


def test_no_proxy_star_turns_every_proxy_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "example.com,*")
    assert environment_proxies() == {}


async def test_the_client_takes_every_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx2's mounts accept whatever is kept (a bad pattern would raise here)."""
    monkeypatch.setenv("NO_PROXY", "a.org,.b.org,*.c.org,localhost,10.0.0.0/8,fe80::/10,::1")
    mounts: dict[str, httpx2.AsyncBaseTransport | None] = dict.fromkeys(environment_proxies())
    async with httpx2.AsyncClient(mounts=mounts):
        pass
