"""Private-first ownership: public sources answer only names no GitLab source has."""

import logging
from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import SourceConfig
from gitlab_pypi_proxy.errors import FailClosed, NotFound
from gitlab_pypi_proxy.index.cached import forget
from gitlab_pypi_proxy.index.private_first import PrivateFirst
from gitlab_pypi_proxy.storage.stores import Stores
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed

A, B, C = "a" * 64, "b" * 64, "c" * 64


class ConfiguredFake(FakeSource):
    """A fake GitLab source with a configuration (for allow_public)."""

    def __init__(self, name: str, allow_public: frozenset[str] = frozenset()) -> None:
        super().__init__(name)
        self.config = SourceConfig(name, "gitlab_project", "1", allow_public=allow_public)


def _index(tmp_path: Path, private: list[ConfiguredFake], public: list[FakeSource]) -> PrivateFirst:
    allow_public = {s.name: s.config.allow_public for s in private}  # as the services hand it
    return composed(tmp_path, private, public, allow_public=allow_public).plain


async def test_a_private_name_never_comes_from_public(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gitlab, public = ConfiguredFake("platform"), FakeSource("public")
    gitlab.add("acme-utils", "acme_utils-1.0-py3-none-any.whl", A)
    public.add("acme-utils", "acme_utils-99.0-py3-none-any.whl", B)
    index = _index(tmp_path, [gitlab], [public])
    with caplog.at_level(logging.WARNING):
        page = await index.project_page("acme-utils")
        await index.shadows.tasks.settled()
    assert [f.source for f in page.files] == ["platform"]
    assert page.sources == ("platform",)
    assert "private name acme-utils also exists on public source public" in caplog.text


async def test_a_public_name_is_asked_of_public_only_after_gitlab_says_no(tmp_path: Path) -> None:
    gitlab, public = ConfiguredFake("platform"), FakeSource("public")
    public.add("requests", "requests-2.0-py3-none-any.whl", B)
    page = await _index(tmp_path, [gitlab], [public]).project_page("requests")
    assert page.sources == ("public",)
    assert gitlab.page_calls == 1


async def test_gitlab_down_fails_closed_naming_the_source(tmp_path: Path) -> None:
    gitlab, public = ConfiguredFake("platform"), FakeSource("public")
    gitlab.down = True
    public.add("acme-utils", "acme_utils-99.0-py3-none-any.whl", B)
    with pytest.raises(FailClosed) as caught:
        await _index(tmp_path, [gitlab], [public]).project_page("acme-utils")
    assert "platform" in str(caught.value)
    assert "acme-utils" in str(caught.value)
    assert public.page_calls == 0


async def test_allow_public_lets_the_public_index_answer_while_gitlab_is_down(
    tmp_path: Path,
) -> None:
    gitlab = ConfiguredFake("platform", allow_public=frozenset({"six"}))
    gitlab.down = True
    public = FakeSource("public")
    public.add("six", "six-1.0-py3-none-any.whl", B)
    page = await _index(tmp_path, [gitlab], [public]).project_page("six")
    assert page.sources == ("public",)


async def test_root_lists_the_gitlab_names_only(tmp_path: Path) -> None:
    gitlab, public = ConfiguredFake("platform"), FakeSource("public")
    gitlab.add("acme-utils", "acme_utils-1.0-py3-none-any.whl", A)
    public.add("requests", "requests-2.0-py3-none-any.whl", B)
    listing = await _index(tmp_path, [gitlab], [public]).project_list()
    assert listing.names == frozenset({"acme-utils"})


async def test_a_name_owned_by_a_source_the_caller_may_not_read_never_comes_from_public(
    tmp_path: Path,
) -> None:
    hidden, readable, public = (
        ConfiguredFake("secret"),
        ConfiguredFake("platform"),
        FakeSource("public"),
    )
    hidden.add("acme-secret", "acme_secret-1.0-py3-none-any.whl", A)
    public.add("acme-secret", "acme_secret-99.0-py3-none-any.whl", B)
    index = _index(tmp_path, [hidden, readable], [public])
    with pytest.raises(NotFound):
        await index.project_page("acme-secret", frozenset({"platform", "public"}))
    assert public.page_calls == 0


async def test_hidden_sources_are_not_asked_when_no_public_source_could_answer(
    tmp_path: Path,
) -> None:
    hidden, readable = ConfiguredFake("secret"), ConfiguredFake("platform")
    index = _index(tmp_path, [hidden, readable], [])
    with pytest.raises(NotFound):
        await index.project_page("anything", frozenset({"platform"}))
    assert hidden.page_calls == 0


async def test_the_read_check_logs_as_the_index_not_as_the_access_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only access lines are `proxy.access`: log collectors parse that logger's lines."""
    gitlab = ConfiguredFake("platform")
    gitlab.down = True
    index = _index(tmp_path, [gitlab], [])
    with caplog.at_level(logging.DEBUG), pytest.raises(NotFound):
        await index.check_file(A, "acme_utils-1.0-py3-none-any.whl", frozenset({"platform"}))
    checks = [r.name for r in caplog.records if "cannot check" in r.getMessage()]
    assert checks == ["proxy.index"]


async def test_a_public_file_url_stops_being_served_once_gitlab_has_the_name(
    tmp_path: Path,
) -> None:
    """A lock file written while only the public index had the name keeps its file's URL: once a
    GitLab source has the name (the name poll forgets its "not here"), that URL is refused,
    while GitLab's own files of the name, and public files of other names, are served."""
    gitlab, public = ConfiguredFake("platform"), FakeSource("public")
    public.add("acme-utils", "acme_utils-99.0-py3-none-any.whl", B)
    public.add("requests", "requests-2.0-py3-none-any.whl", C)
    stores = Stores.local(tmp_path, 2**30)
    built = composed(tmp_path, [gitlab], [public], stores=stores)
    index = built.plain
    await index.project_page("acme-utils")
    await built.tasks.settled()  # where the public file is, remembered
    await index.check_file(B, "acme_utils-99.0-py3-none-any.whl")

    gitlab.add("acme-utils", "acme_utils-1.0-py3-none-any.whl", A)
    await forget(stores.pages, ["platform"], "acme-utils")  # what the name poll does
    with pytest.raises(NotFound, match="a name a GitLab source has"):
        await index.check_file(B, "acme_utils-99.0-py3-none-any.whl")
    with pytest.raises(NotFound):
        await index.check_file(B, "acme_utils-99.0-py3-none-any.whl.metadata")
    await index.check_file(A, "acme_utils-1.0-py3-none-any.whl")
    await index.check_file(C, "requests-2.0-py3-none-any.whl")


async def test_a_file_of_a_private_name_asked_by_digest_alone_passes(tmp_path: Path) -> None:
    """A GitLab file no page listed yet (pinned by a lock file, published after the page was
    kept) can only come from GitLab: the ownership check lets it through."""
    gitlab, public = ConfiguredFake("platform"), FakeSource("public")
    gitlab.add("acme-utils", "acme_utils-1.0-py3-none-any.whl", A)
    index = composed(tmp_path, [gitlab], [public]).plain
    await index.check_file(B, "acme_utils-2.0-py3-none-any.whl")
