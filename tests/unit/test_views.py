"""Views ([[views]]): the same index over a subset of the sources, in the view's priority order;
ownership counts every GitLab source, read rights intersect with the view; its files only from
its sources; the configuration's checks. The routes: tests/unit/test_operator_api.py and
test_memo_hits.py."""

from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import ConfigError, load
from gitlab_pypi_proxy.errors import NotFound
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed

SHA = {n: f"{n:x}" * 64 for n in range(1, 8)}


def _sources() -> tuple[FakeSource, FakeSource, FakeSource]:
    """platform and ml (GitLab) both have `shared` 1.0, with other bytes; ml has `ml-lib`; the
    public index has `ml-lib` too (a private name) and `pub`."""
    platform, ml, public = FakeSource("platform"), FakeSource("ml"), FakeSource("public")
    platform.add("shared", "shared-1.0-py3-none-any.whl", SHA[1])
    platform.add("plat-only", "plat_only-1.0-py3-none-any.whl", SHA[2])
    ml.add("shared", "shared-1.0-py3-none-any.whl", SHA[3])
    ml.add("shared", "shared-2.0-py3-none-any.whl", SHA[4])
    ml.add("ml-lib", "ml_lib-1.0-py3-none-any.whl", SHA[5])
    public.add("ml-lib", "ml_lib-6.6-py3-none-any.whl", SHA[6])
    public.add("pub", "pub-1.0-py3-none-any.whl", SHA[7])
    return platform, ml, public


async def test_a_view_lists_its_sources_in_its_order(tmp_path: Path) -> None:
    platform, ml, public = _sources()
    views = {"release": ["platform"], "ml-first": ["ml", "platform"], "open": ["public"]}
    built = composed(tmp_path, [platform, ml], [public], views=views)
    whole = await built.index.project_page("shared")
    assert [(f.filename, f.source) for f in whole.files] == [
        ("shared-1.0-py3-none-any.whl", "platform"),  # the first source wins a file name
        ("shared-2.0-py3-none-any.whl", "ml"),
    ]
    release = built.views["release"]
    allowed = release.readable(None)
    page = await release.index.project_page("shared", allowed)
    assert [f.filename for f in page.files] == ["shared-1.0-py3-none-any.whl"]
    assert (await release.index.project_list(allowed)).names == {"shared", "plat-only"}
    with pytest.raises(NotFound):
        await release.index.project_page("ml-lib", allowed)
    ml_first = built.views["ml-first"]
    page = await ml_first.index.project_page("shared", ml_first.readable(None))
    assert [(f.filename, f.source) for f in page.files] == [
        ("shared-1.0-py3-none-any.whl", "ml"),  # in this view, ml wins the file name
        ("shared-2.0-py3-none-any.whl", "ml"),
    ]
    # its files only from its sources: ml's digest is no file of the release view
    await release.index.check_file(SHA[1], "shared-1.0-py3-none-any.whl", allowed)
    with pytest.raises(NotFound):
        await release.index.check_file(SHA[4], "shared-2.0-py3-none-any.whl", allowed)
    await built.close()


async def test_a_public_view_never_answers_a_name_a_gitlab_source_has(tmp_path: Path) -> None:
    platform, ml, public = _sources()
    built = composed(tmp_path, [platform, ml], [public], views={"open": ["public"]})
    view = built.views["open"]
    allowed = view.readable(None)
    assert [f.filename for f in (await view.index.project_page("pub", allowed)).files] == [
        "pub-1.0-py3-none-any.whl"
    ]
    # ml (outside the view) owns ml-lib: the public package of that name is not served here
    with pytest.raises(NotFound):
        await view.index.project_page("ml-lib", allowed)
    with pytest.raises(NotFound):  # nor its file, however a client came by its URL
        await view.index.check_file(SHA[6], "ml_lib-6.6-py3-none-any.whl", allowed)
    await built.close()


def test_a_reader_sees_the_view_it_may_read(tmp_path: Path) -> None:
    platform, ml, public = _sources()
    built = composed(tmp_path, [platform, ml], [public], views={"both": ["platform", "ml"]})
    view = built.views["both"]
    assert view.readable(None) == {"platform", "ml"}
    assert view.readable(frozenset({"ml", "public"})) == {"ml"}
    assert view.readable(frozenset({"public"})) == frozenset()


# --- the configuration ----------------------------------------------------------------------

_SOURCES = (
    '[gitlab]\nurl = "https://gitlab.example.com"\n'
    '[[sources]]\nname = "platform"\ngitlab_project = 11\n'
    '[[sources]]\nname = "ml"\ngitlab_project = 12\n'
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(f'[cache]\ndirectory = "{tmp_path / "cache"}"\n' + _SOURCES + text)
    return path


def test_views_are_read_in_their_order(tmp_path: Path) -> None:
    config = load(_write(tmp_path, '[[views]]\nname = "ml-first"\nsources = ["ml", "platform"]\n'))
    assert [(v.name, v.sources) for v in config.views] == [("ml-first", ("ml", "platform"))]


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ('name = "simple"\nsources = ["ml"]', "views[0].name: 'simple' is one of the proxy's"),
        ('name = "a/b"\nsources = ["ml"]', "views[0].name: required: letters"),
        ('name = "r"\nsources = ["nope"]', "views[0].sources: no source named 'nope'"),
        ('name = "r"\nsources = ["ml", "ml"]', "views[0].sources: 'ml' is listed twice"),
        ('name = "r"\nsources = []', "views[0].sources: expected a non-empty list"),
        ('name = "r"\nsources = ["ml"]\nextra = 1', "views[0].extra: unknown key"),
    ],
)
def test_a_view_that_cannot_work_names_the_key(tmp_path: Path, views: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(_write(tmp_path, f"[[views]]\n{views}\n"))
    assert message in str(caught.value)


def test_two_views_of_one_name_are_refused(tmp_path: Path) -> None:
    twice = '[[views]]\nname = "r"\nsources = ["ml"]\n' * 2
    with pytest.raises(ConfigError, match="views: two views are named 'r'"):
        load(_write(tmp_path, twice))
