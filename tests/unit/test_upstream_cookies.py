"""The upstream client keeps no cookies: one an upstream sets never rides along with a later
request, to that host, to another port, or under other credentials."""

from gitlab_pypi_proxy.sources.upstream import make_upstream
from tests.hostile_index import Reply, hostile_index


async def test_a_cookie_an_upstream_sets_is_never_sent_back() -> None:
    cookies = [
        ("set-cookie", "_gitlab_session=s3cret; Path=/; HttpOnly"),
        ("set-cookie", "wide=1; Domain=127.0.0.1; Path=/"),
    ]
    with hostile_index() as (setter, _), hostile_index() as (catcher, _):
        setter.on("/simple/demo/", Reply(headers=cookies, body=b"<a>x</a>"))
        catcher.on("/f.whl", Reply(body=b"x"))
        upstream = make_upstream(5.0)
        try:
            await upstream.get("platform", f"{setter.url}/simple/demo/")
            await upstream.get("platform", f"{setter.url}/simple/other/", auth=("u", "p"))
            await upstream.get("public", f"{catcher.url}/simple/demo/")
            async with upstream.stream("public", f"{catcher.url}/f.whl", method="HEAD"):
                pass
        finally:
            await upstream.aclose()
        later = setter.asked[1:] + catcher.asked
    assert len(later) == 3
    assert [a.headers.get("cookie") for a in later] == [None] * 3
