"""Small GitLab data sets that several end-to-end suites install from."""

from tests.dists import make_wheel
from tests.gitlab_double import GitLabDouble


def app_with_dependency(token: str, *extra: tuple[str, str, bytes]) -> GitLabDouble:
    """Private project 11 with app-main 1.0 depending on app-dep 2.0, readable with `token`;
    `extra` adds (name, file name, bytes) files at version 1.0."""
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_token(token, read={11})
    for name, version, deps in [("app-main", "1.0", ["app-dep"]), ("app-dep", "2.0", [])]:
        filename, data = make_wheel(name, version, requires_dist=deps)
        double.add_package_file(11, name, version, filename, data)
    for name, filename, data in extra:
        double.add_package_file(11, name, "1.0", filename, data)
    return double
