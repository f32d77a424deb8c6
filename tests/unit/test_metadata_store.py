"""The core metadata store: a page's lookup reads its project's list and the entries on it, never
every wheel; what the list names but the store lost is not found."""

from pathlib import Path

import pytest

from gitlab_pypi_proxy.storage.metadata_store import MetadataStore

METADATA = b"Metadata-Version: 2.1\nName: x\n"


def _sha(n: int) -> str:
    return f"{n:064x}"


async def test_a_page_looks_up_its_project_s_list_and_the_entries_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MetadataStore(tmp_path)
    try:
        digest = await store.put("pypi", _sha(1), METADATA, "x")
        await store.put("pypi", _sha(2), METADATA, "y")
        read: list[object] = []
        entry = store._entry

        def counted(key: tuple[str, str]) -> object:
            read.append(key)
            return entry(key)

        monkeypatch.setattr(store, "_entry", counted)
        page = [("pypi", _sha(n)) for n in range(1, 3000)]  # a big page of x's wheels
        assert await store.digests(page, "x") == {("pypi", _sha(1)): digest}
        assert read == [("pypi", _sha(1))]  # one entry read, not 2,999
        # y's wheel listed on x's page: not advertised there (nothing wrong is, either)
        assert await store.digests([("pypi", _sha(2))], "x") == {}
        assert await store.digests([("pypi", _sha(2))], None) == {("pypi", _sha(2)): digest}
    finally:
        store.close()


async def test_a_listed_entry_that_went_is_not_found_and_a_list_is_shared(tmp_path: Path) -> None:
    worker_a, worker_b = MetadataStore(tmp_path), MetadataStore(tmp_path)
    try:
        await worker_a.put("pypi", _sha(1), METADATA, "x")
        digest = await worker_b.put("gitlab", _sha(1), METADATA, "x")
        await worker_a.put("pypi", _sha(1), METADATA, "x")  # listed once
        assert worker_b._listed("x") == [("pypi", _sha(1)), ("gitlab", _sha(1))]
        await worker_b.drop(["pypi"], _sha(1))
        keys = [("pypi", _sha(1)), ("gitlab", _sha(1))]
        assert await worker_a.digests(keys, "x") == {("gitlab", _sha(1)): digest}
    finally:
        worker_a.close()
        worker_b.close()
