"""The versions of a page's file names are worked out once per spelling: a version's wheels (one
per platform, dozens for numpy or pydantic-core) spell it alike, and each full parse of a wheel
name (its tags) is what rendering a big page spent its time on, each time it was rendered. The
answer is the one every name parsed on its own gives."""

from packaging.utils import parse_wheel_filename

from gitlab_pypi_proxy import names
from gitlab_pypi_proxy.names import file_version, file_versions

PLATFORMS = [f"cp3{minor}-cp3{minor}-manylinux_2_17_x86_64" for minor in range(8, 14)] + [
    f"cp3{minor}-cp3{minor}-win_amd64" for minor in range(8, 14)
]


def _page() -> list[str]:
    wheels = [f"numpy-1.{n}.0-{p}.whl" for n in range(40) for p in PLATFORMS]
    sdists = [f"numpy-1.{n}.0.tar.gz" for n in range(40, 45)]
    odd = [
        "numpy-2.0.0-bad tag-x.whl",  # no wheel name: its version is not listed
        "numpy-1.3.0-bad tag-x.whl",  # no wheel name, a version others list
        "numpy-3.0.0rc1-py3-none-any.whl",
        "numpy-3.0.0-RC1-py3-none-any.whl",  # no build number: not a wheel name
        "not-a-dist.zip",
    ]
    return [*odd, *wheels, *sdists]


def test_the_versions_are_those_each_name_gives() -> None:
    page = _page()
    assert file_versions(page) == {v for f in page if (v := file_version(f))}
    assert "2.0.0" not in file_versions(page) and "3.0.0rc1" in file_versions(page)


def test_a_versions_wheels_are_parsed_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    parsed: list[str] = []

    def counted(filename: str):  # type: ignore[no-untyped-def]
        parsed.append(filename)
        return parse_wheel_filename(filename)

    monkeypatch.setattr(names, "parse_wheel_filename", counted)
    file_versions(_page())
    assert len(parsed) == 40 + 4  # a name per version, and the odd ones
