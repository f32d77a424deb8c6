"""The GitLab source against GitLab's real answers, mocked with respx."""

import base64

import httpx
import httpx2
import pytest
import respx

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.errors import FileNotFoundUpstream, RateLimited, Refused, SourceUnavailable
from gitlab_pypi_proxy.sources.gitlab_group import GitLabGroup
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.upstream import Upstream

API = "http://gitlab.internal:8080/api/v4"
SHA = "a" * 64


def source(client: httpx2.AsyncClient, kind: str = "gitlab_project", target: str = "acme/platform"):
    gitlab = GitLabConfig(url="http://gitlab.internal:8080", token="glpat-t0ken", timeout=2)
    kinds = {"gitlab_project": GitLabProject, "gitlab_group": GitLabGroup}
    return kinds[kind](
        SourceConfig(name="platform", kind=kind, target=target), gitlab, Upstream(client)
    )


def page(*links: str) -> str:
    return f"<html><body><h1>Links</h1>{''.join(links)}</body></html>"


@respx.mock
async def test_page_asks_normalized_name_and_rebuilds_links_on_configured_host(client) -> None:
    route = respx.get(f"{API}/projects/acme%2Fplatform/packages/pypi/simple/acme-utils").respond(
        200,
        text=page(
            f'<a href="https://gitlab.example.com/api/v4/projects/11/packages/pypi/files/{SHA}/'
            f'acme_utils-1.0-py3-none-any.whl#sha256={SHA}" data-requires-python="&gt;=3.8">'
            "acme_utils-1.0-py3-none-any.whl</a>"
        ),
    )
    result = await source(client).project_page("acme-utils")
    assert route.called
    expected = "Basic " + base64.b64encode(b"gitlab-pypi-proxy:glpat-t0ken").decode()
    assert route.calls.last.request.headers["authorization"] == expected
    assert result is not None
    (file,) = result.files
    assert file.url == (
        f"{API}/projects/acme%2Fplatform/packages/pypi/files/{SHA}/acme_utils-1.0-py3-none-any.whl"
    )
    assert file.requires_python == ">=3.8"
    assert file.source == "platform"


@respx.mock
async def test_redirect_to_public_index_means_not_here(client) -> None:
    respx.get(f"{API}/projects/acme%2Fplatform/packages/pypi/simple/requests").respond(
        302, headers={"Location": "https://pypi.org/simple/requests/"}
    )
    public = respx.get("https://pypi.org/simple/requests/").respond(200, text=page())
    assert await source(client).project_page("requests") is None
    assert not public.called


@pytest.mark.parametrize("status", [403, 404])
@respx.mock
async def test_refusals_mean_not_here(client, status: int) -> None:
    respx.get(f"{API}/groups/acme/-/packages/pypi/simple/x").respond(status, json={})
    assert await source(client, "gitlab_group", "acme").project_page("x") is None


@pytest.mark.parametrize("kind", ["gitlab_project", "gitlab_group"])
@respx.mock
async def test_the_proxys_credentials_refused_is_unavailable_not_absent(client, kind: str) -> None:
    """401: GitLab wants other credentials than the proxy's; it has said nothing of the name (a
    "not here" would let the public index answer for a private name)."""
    respx.get(url__regex=r".*/packages/pypi/simple/x$").respond(401, json={})
    with pytest.raises(SourceUnavailable) as caught:
        await source(client, kind, "acme").project_page("x")
    assert caught.value.source == "platform" and caught.value.status == 502
    assert caught.value.reason.startswith("HTTP 401 from ")


@respx.mock
async def test_5xx_and_timeouts_are_unavailable(client) -> None:
    respx.get(f"{API}/projects/acme%2Fplatform/packages/pypi/simple/x").respond(503)
    with pytest.raises(SourceUnavailable) as caught:
        await source(client).project_page("x")
    assert caught.value.source == "platform"
    assert not caught.value.timeout
    respx.get(f"{API}/projects/acme%2Fplatform/packages/pypi/simple/y").mock(
        side_effect=httpx2.ReadTimeout("slow")
    )
    with pytest.raises(SourceUnavailable) as caught:
        await source(client).project_page("y")
    assert caught.value.timeout
    assert "glpat" not in str(caught.value)


@respx.mock
async def test_a_429_is_gitlabs_rate_limit_never_not_here(client) -> None:
    route = respx.get(f"{API}/projects/acme%2Fplatform/packages/pypi/simple/x").respond(
        429, text="Retry later\n", headers={"Retry-After": "30"}
    )
    gitlab = source(client)
    with pytest.raises(RateLimited) as caught:
        await gitlab.project_page("x")
    assert caught.value.retry_after == 30
    assert str(caught.value) == (
        "upstream platform unavailable: GitLab's rate limit (HTTP 429 Too Many Requests), "
        "retry after 30 s"
    )
    # until then, no request goes out: the next one fails at once
    with pytest.raises(RateLimited):
        await gitlab.project_page("y")
    assert route.call_count == 1
    file = gitlab.file_for(SHA, "x-1.0.tar.gz")
    with pytest.raises(RateLimited):
        async with gitlab.open_file(file):
            pass


@respx.mock
async def test_file_without_digest_is_not_listed(client) -> None:
    respx.get(f"{API}/projects/acme%2Fplatform/packages/pypi/simple/x").respond(
        200, text=page('<a href="https://g/files/x-1.0.tar.gz">x-1.0.tar.gz</a>')
    )
    result = await source(client).project_page("x")
    assert result is not None and result.files == ()


@respx.mock
async def test_group_names_come_from_every_page_of_the_packages_api(client) -> None:
    url = f"{API}/groups/acme/packages"
    pages = {
        "1": ([{"name": "Acme.Utils"}, {"name": "acme_utils"}], "2"),
        "2": ([{"name": "Other"}], ""),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params["package_type"] == "pypi"
        items, next_page = pages[request.url.params["page"]]
        return httpx.Response(200, json=items, headers={"X-Next-Page": next_page})

    respx.get(url).mock(side_effect=answer)
    names = await source(client, "gitlab_group", "acme").project_names()
    assert names == frozenset({"acme-utils", "other"})


@pytest.mark.parametrize("status", [401, 403, 404])
@respx.mock
async def test_a_refused_packages_api_is_an_error_for_a_listing(client, status: int) -> None:
    respx.get(f"{API}/groups/acme/packages").respond(status, json={"message": "no"})
    group = source(client, "gitlab_group", "acme")
    with pytest.raises(Refused) as caught:
        [p async for p in group.packages()]
    assert str(caught.value).startswith(
        f"source platform: the Packages API answered HTTP {status} (the token needs the read_api"
    )
    assert "glpat" not in str(caught.value)
    assert await group.project_names() == frozenset()  # the root listing stays tolerant


@respx.mock
async def test_project_names_from_root_index(client) -> None:
    respx.get(f"{API}/projects/7/packages/pypi/simple").respond(
        200, text=page('<a href="https://g/simple/Acme.Utils">Acme.Utils</a>' * 2)
    )
    assert await source(client, "gitlab_project", "7").project_names() == {"acme-utils"}


@respx.mock
async def test_file_redirect_to_object_storage_carries_no_credentials(client) -> None:
    src = source(client)
    file = src.file_for(SHA, "x-1.0.tar.gz")
    first = respx.get(file.url).respond(
        302, headers={"Location": "https://storage.example/bucket/x?sig=1"}
    )
    storage = respx.get("https://storage.example/bucket/x?sig=1").respond(200, content=b"bytes")
    async with src.open_file(file) as stream:
        body = b"".join([chunk async for chunk in stream.chunks])
    assert body == b"bytes"
    assert stream.size == 5
    assert "authorization" in first.calls.last.request.headers
    assert "authorization" not in storage.calls.last.request.headers
    assert "private-token" not in storage.calls.last.request.headers


@respx.mock
async def test_missing_file_and_failing_file(client) -> None:
    src = source(client)
    missing = src.file_for(SHA, "missing-1.0.tar.gz")
    respx.get(missing.url).respond(404)
    with pytest.raises(FileNotFoundUpstream):
        async with src.open_file(missing):
            pass
    broken = src.file_for(SHA, "broken-1.0.tar.gz")
    respx.get(broken.url).mock(side_effect=httpx2.ConnectError("refused"))
    with pytest.raises(SourceUnavailable):
        async with src.open_file(broken):
            pass
