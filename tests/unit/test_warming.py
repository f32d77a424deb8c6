"""Dependency-aware warming (gitlab_pypi_proxy.index.warming): which names, how often, failures
harmless."""

import asyncio

import pytest

from gitlab_pypi_proxy.index import warming
from gitlab_pypi_proxy.index.warming import MAX_PER_WHEEL, Warmer, dependencies

METADATA = b"""Metadata-Version: 2.1
Name: demo
Version: 1.0
Requires-Dist: Requests>=2
Requires-Dist: requests[socks]
Requires-Dist: typing_extensions; python_version < "3.11"
Requires-Dist: pytest; extra == "test"
Requires-Dist: not a requirement !!
Requires-Dist: Zope.Interface

A description.
Requires-Dist: not-a-header
"""


def test_dependencies_are_the_names_every_install_needs() -> None:
    assert dependencies(METADATA) == ["requests", "typing-extensions", "zope-interface"]
    assert dependencies(b"Metadata-Version: 2.1\nName: leaf\n") == []


async def _nothing_kept(name: str) -> bool:
    return False


async def test_each_name_is_asked_once_and_a_failure_is_harmless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    parsed: list[bytes] = []
    monkeypatch.setattr(
        warming, "dependencies", lambda metadata: parsed.append(metadata) or dependencies(metadata)
    )

    async def page(name: str) -> None:
        asked.append(name)
        if name == "requests":
            raise LookupError("not here")

    warmer = Warmer(page, _nothing_kept)
    warmer.warm("a" * 64, METADATA)
    warmer.warm("a" * 64, METADATA)  # the same wheel again: not even parsed
    warmer.warm("b" * 64, METADATA)  # another wheel with the same requirements: nothing more
    await warmer.tasks.settled()
    assert sorted(asked) == ["requests", "typing-extensions", "zope-interface"]
    assert len(parsed) == 2  # once per wheel
    await warmer.close()


async def test_one_wheel_warms_a_bounded_number_of_names() -> None:
    started = asyncio.Event()

    async def page(name: str) -> None:
        started.set()

    warmer = Warmer(page, _nothing_kept)
    many = b"Metadata-Version: 2.1\nName: big\n" + b"".join(
        f"Requires-Dist: dep{n}\n".encode() for n in range(3 * MAX_PER_WHEEL)
    )
    warmer.warm("c" * 64, many)
    assert len(warmer.tasks) == MAX_PER_WHEEL
    await warmer.tasks.settled()
    assert started.is_set()
    await warmer.close()


async def test_a_name_whose_answer_is_kept_is_not_warmed() -> None:
    """A page some worker has kept (a client asked for it, or an earlier warming) is not read
    again for nothing."""
    asked: list[str] = []
    kept_by_then = {"requests", "zope-interface"}

    async def page(name: str) -> None:
        asked.append(name)

    async def kept(name: str) -> bool:
        return name in kept_by_then

    warmer = Warmer(page, kept)
    warmer.warm("d" * 64, METADATA)
    await warmer.tasks.settled()
    assert asked == ["typing-extensions"]
    await warmer.close()
