"""The PEP 503 parser against GitLab's real page shapes (old and new) and other indexes."""

from gitlab_pypi_proxy.sources.simple_html import parse_project_names, parse_project_page

SHA = "a" * 64
FILES = "https://gitlab.example.com/api/v4/projects/11/packages/pypi/files"
WHEEL = "acme_utils-2.0.0-py3-none-any.whl"
SDIST = "Acme.Utils-1.0.tar.gz"
# GitLab puts every link on one line, with nothing between them.
LINKS = (
    f'<a href="{FILES}/{SHA}/{WHEEL}#sha256={SHA}" data-requires-python="&gt;=3.8">{WHEEL}</a>'
    f'<a href="{FILES}/{"b" * 64}/{SDIST}#sha256={"b" * 64}" data-requires-python="">{SDIST}</a>'
)
GITLAB_PAGE = f"""<!DOCTYPE html>
        <html>
          <head>
            <title>Links for Acme.Utils</title>
          </head>
          <body>
            <h1>Links for Acme.Utils</h1>
            {LINKS}
          </body>
        </html>"""


def test_gitlab_page_without_br() -> None:
    links = parse_project_page(GITLAB_PAGE, "http://127.0.0.1/api/v4/projects/11/simple/acme-utils")
    assert [link.filename for link in links] == [
        "acme_utils-2.0.0-py3-none-any.whl",
        "Acme.Utils-1.0.tar.gz",
    ]
    assert links[0].sha256 == SHA
    assert links[0].requires_python == ">=3.8"
    assert links[1].requires_python is None  # GitLab's empty attribute means "none"
    assert links[0].url.startswith("https://gitlab.example.com/")
    assert "#" not in links[0].url


def test_old_gitlab_page_with_br_and_extra_whitespace() -> None:
    html = f"""<html><body>
      <a  href = "files/{SHA}/x-1.0.tar.gz#sha256={SHA}"  data-requires-python="&lt;4,&gt;=3.9" >
         x-1.0.tar.gz </a><br/>
      <a href="files/{"c" * 64}/x-1.1.tar.gz#md5=abc">x-1.1.tar.gz</a><br>
    </body></html>"""
    links = parse_project_page(html, "https://index.example/simple/x/")
    assert links[0].url == f"https://index.example/simple/x/files/{SHA}/x-1.0.tar.gz"
    assert links[0].requires_python == "<4,>=3.9"
    assert links[1].sha256 is None  # no sha256: the caller decides


def test_pep_592_and_658_attributes() -> None:
    html = (
        f'<a href="/f/x-1.0-py3-none-any.whl#sha256={SHA}" data-yanked="broken" '
        f'data-dist-info-metadata="sha256={"d" * 64}">x</a>'
        f'<a href="/f/x-0.9-py3-none-any.whl#sha256={SHA}" data-yanked>x</a>'
    )
    first, second = parse_project_page(html, "https://i.example/simple/x/")
    assert first.yanked == "broken"
    assert first.core_metadata_sha256 == "d" * 64
    assert second.yanked is True


def test_root_index_names_repeat_per_version_and_are_normalized() -> None:
    html = (
        '<a href="https://g.example/api/v4/projects/1/packages/pypi/simple/Acme.Utils">Acme.Utils</a>'
        '<a href="https://g.example/api/v4/projects/1/packages/pypi/simple/Acme.Utils">Acme.Utils</a>'
        '<a href="https://g.example/api/v4/projects/1/packages/pypi/simple/other_pkg">other_pkg</a>'
    )
    assert parse_project_names(html) == frozenset({"acme-utils", "other-pkg"})


def test_root_index_names_from_nested_text_and_character_references() -> None:
    html = (
        '<a href="/a/">  Acme_Utils\n</a><br><a href="/b/"><b>other</b>.<i>pkg</i></a>'
        '<a href="/c/">foo&#95;bar</a><a href="/d/">   </a><a href="/e/">unclosed'
    )
    assert parse_project_names(html) == frozenset(
        {"acme-utils", "other-pkg", "foo-bar", "unclosed"}
    )
