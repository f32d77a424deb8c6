"""Small GitLab data sets that several end-to-end suites install from."""

import httpx2

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble

UPLOADER_PASSWORD = "worlds-ci-password"
UPLOADER_GITLAB_TOKEN = "gldt-worlds-deploy"
# Proxy configuration: user `ci` uploads to the source named "platform" with the token above.
UPLOADER_CONFIG = f"""
[upload]
default_source = "platform"

[[users]]
name = "ci"
password = "{UPLOADER_PASSWORD}"
upload = ["platform"]
gitlab_token = "{UPLOADER_GITLAB_TOKEN}"
"""


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


def app_taking_uploads(token: str) -> GitLabDouble:
    """`app_with_dependency`, and project 11 takes uploads from the user of UPLOADER_CONFIG."""
    double = app_with_dependency(token)
    double.add_token(UPLOADER_GITLAB_TOKEN, write={11})
    return double


def upload_wheel(
    proxy_url: str, name: str, version: str, headers: dict[str, str] | None = None
) -> tuple[str, httpx2.Response]:
    """Upload a new wheel as UPLOADER_CONFIG's user, the form twine sends: (file name, answer)."""
    filename, data = make_wheel(name, version)
    answer = httpx2.post(
        f"{proxy_url}/upload/",
        auth=("ci", UPLOADER_PASSWORD),
        data={"name": name, "version": version, ":action": "file_upload"},
        files={"content": (filename, data)},
        headers=headers,
        timeout=60,
    )
    return filename, answer


def pinned_url(proxy_url: str, double: GitLabDouble, name: str) -> str:
    """The proxy's URL of `name`'s first file as a lockfile pins it: asked without its page, so
    no look-ahead of the page has fetched it before (its first download is the client's own)."""
    file = next(f for f in double.files if f.name == name)
    return f"{proxy_url}/files/{file.sha256}/{file.filename}"
