"""Content negotiation (PEP 691) and rendering (PEP 503, 592, 658, 700)."""

import json
from datetime import UTC, datetime

import pytest

from gitlab_pypi_proxy.http.serialize import (
    HTML,
    JSON,
    TEXT_HTML,
    negotiate,
    render_list,
    render_page,
)
from gitlab_pypi_proxy.model import DistFile, ProjectList, ProjectPage

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT_HTML),
        ("*/*", TEXT_HTML),
        (PIP_ACCEPT, JSON),
        ("text/html, application/vnd.pypi.simple.v1+json;q=0.5", TEXT_HTML),
        (
            "application/vnd.pypi.simple.v1+html;q=0.2, application/vnd.pypi.simple.v1+json;q=0.9",
            JSON,
        ),
        ("application/vnd.pypi.simple.latest+json", JSON),
        ("application/vnd.pypi.simple.v1+html", HTML),
        ("application/*", JSON),
        ("application/json", None),
        ("text/html;q=0", None),
        ("*/*;q=0.1, text/html;q=0", JSON),
    ],
)
def test_negotiate_by_q_values(accept: str | None, expected: str | None) -> None:
    assert negotiate(accept) == expected


def test_format_parameter_overrides_accept() -> None:
    assert negotiate(PIP_ACCEPT, format=TEXT_HTML) == TEXT_HTML
    assert negotiate("text/html", format=JSON) == JSON
    assert negotiate("text/html", format="application/nonsense") is None


def _page() -> ProjectPage:
    return ProjectPage(
        name="acme-utils",
        files=(
            DistFile(
                filename="acme_utils-2.0.0-py3-none-any.whl",
                sha256="a" * 64,
                source="platform",
                url="https://g/x",
                requires_python='>=3.8,<"4"',
                core_metadata_sha256="c" * 64,
                size=10,
                upload_time=datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            ),
            DistFile(
                filename="Acme.Utils-1.0.tar.gz",
                sha256="b" * 64,
                source="acme",
                url="https://g/y",
                yanked="broken build",
                size=20,
            ),
        ),
        sources=("platform", "acme"),
    )


def test_html_page() -> None:
    html = render_page(_page(), TEXT_HTML).decode()
    assert '<meta name="pypi:repository-version" content="1.1">' in html
    assert (
        f'href="../../files/{"a" * 64}/acme_utils-2.0.0-py3-none-any.whl#sha256={"a" * 64}"' in html
    )
    assert 'data-requires-python="&gt;=3.8,&lt;&quot;4&quot;"' in html
    assert f'data-core-metadata="sha256={"c" * 64}"' in html
    assert 'data-yanked="broken build"' in html
    assert "<!-- sources: platform, acme -->" in html
    # no metadata known for the sdist: nothing advertised (pip fails hard on a 404 sidecar)
    sdist_line = next(line for line in html.splitlines() if "Acme.Utils-1.0.tar.gz" in line)
    assert "core-metadata" not in sdist_line
    assert "data-requires-python" not in sdist_line


def test_json_page() -> None:
    document = json.loads(render_page(_page(), JSON))
    assert document["meta"] == {"api-version": "1.1"}
    assert document["name"] == "acme-utils"
    assert document["versions"] == ["1.0", "2.0.0"]
    wheel, sdist = document["files"]
    assert wheel["url"] == f"../../files/{'a' * 64}/acme_utils-2.0.0-py3-none-any.whl"
    assert wheel["hashes"] == {"sha256": "a" * 64}
    assert wheel["core-metadata"] == {"sha256": "c" * 64}
    assert wheel["upload-time"] == "2024-01-02T03:04:05.000006Z"
    assert "yanked" not in wheel
    assert sdist["yanked"] == "broken build"
    assert document["_source"] == "platform, acme"


def test_api_version_1_0_when_a_size_is_unknown() -> None:
    file = DistFile(filename="x-1.0.tar.gz", sha256="a" * 64, source="s", url="u")
    page = ProjectPage(name="x", files=(file,), sources=("s",))
    assert json.loads(render_page(page, JSON))["meta"]["api-version"] == "1.0"
    assert "size" not in json.loads(render_page(page, JSON))["files"][0]


def test_root_list() -> None:
    projects = ProjectList(names=frozenset({"b-pkg", "a-pkg"}))
    assert json.loads(render_list(projects, JSON))["projects"] == [
        {"name": "a-pkg"},
        {"name": "b-pkg"},
    ]
    html = render_list(projects, TEXT_HTML).decode()
    assert html.index('href="a-pkg/"') < html.index('href="b-pkg/"')


def test_a_json_page_s_entries_are_what_the_encoder_writes_of_their_documents() -> None:
    """Each entry is written out by hand for speed: byte for byte what json would write."""
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    files = (
        DistFile("x-1.0.tar.gz", "a" * 64, "s", "u"),
        DistFile(
            'x_é"\\-1.0-py3-none-any.whl',
            "b" * 64,
            "s",
            "u",
            requires_python='>=3.8,!="3.9"',
            yanked='broken "build"\n\u2028',
            size=123,
            upload_time=when,
            core_metadata_sha256="c" * 64,
            provenance="https://example.org/p",
        ),
        DistFile("x-2.0.zip", "d" * 64, "s", "u", yanked=True, size=0),
        DistFile("x-3.0+cpu~1.tar.gz", "e" * 64, "s", "u", upload_time=when.replace(microsecond=0)),
    )
    body = render_page(ProjectPage("x", files), JSON)
    expected = [
        {"filename": "x-1.0.tar.gz", "url": "../../files/" + "a" * 64 + "/x-1.0.tar.gz"}
        | {"hashes": {"sha256": "a" * 64}},
        {
            "filename": 'x_é"\\-1.0-py3-none-any.whl',
            "url": "../../files/" + "b" * 64 + "/x_%C3%A9%22%5C-1.0-py3-none-any.whl",
            "hashes": {"sha256": "b" * 64},
            "requires-python": '>=3.8,!="3.9"',
            "yanked": 'broken "build"\n\u2028',
            "core-metadata": {"sha256": "c" * 64},
            "dist-info-metadata": {"sha256": "c" * 64},
            "provenance": "../../files/" + "b" * 64 + "/x_%C3%A9%22%5C-1.0-py3-none-any.whl"
            ".provenance",
            "size": 123,
            "upload-time": "2024-05-06T07:08:09.123456Z",
        },
        {"filename": "x-2.0.zip", "url": "../../files/" + "d" * 64 + "/x-2.0.zip"}
        | {"hashes": {"sha256": "d" * 64}, "yanked": True, "size": 0},
        {
            "filename": "x-3.0+cpu~1.tar.gz",
            "url": "../../files/" + "e" * 64 + "/x-3.0%2Bcpu~1.tar.gz",
        }
        | {"hashes": {"sha256": "e" * 64}, "upload-time": "2024-05-06T07:08:09.000000Z"},
    ]
    written = json.dumps(expected, separators=(",", ":")).encode()
    assert written in body  # the same bytes, keys in the same order
    assert json.loads(body)["files"] == expected
