"""End to end, real twine and uv publish through the proxy to the GitLab double, real pip
installing what was uploaded, and the read-access matrix (one test per row)."""

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_sdist, make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.passwords import hash_password
from tests.clients import pip_install, twine_upload, uv_publish
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve

READER_TOKEN = "glpat-proxy-reader-7f3a"
DEPLOY_TOKEN = "gldt-ci-deploy-91bc"
JOB_TOKEN = "glcbt-job-token-55de"
CI_PASSWORD = "ci-proxy-password-x1y2"
READER_PASSWORD = "reader-proxy-password-q9"
SECRETS = (READER_TOKEN, DEPLOY_TOKEN, JOB_TOKEN, CI_PASSWORD, READER_PASSWORD)


@pytest.fixture(scope="module")
def gitlab() -> Iterator[tuple[GitLabDouble, str]]:
    """Project 11 (platform) takes uploads; project 12 (secret) holds secretpkg, which only the
    proxy's own token and the `ci` user may read."""
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_project(12, "acme/secret")
    double.add_token(READER_TOKEN, read={11, 12})
    double.add_token(DEPLOY_TOKEN, write={11})
    double.add_job_token(JOB_TOKEN, write={11})
    name, data = make_wheel("secretpkg", "1.0")
    double.add_package_file(12, "secretpkg", "1.0", name, data)
    name, data = make_wheel("basepkg", "1.0")
    double.add_package_file(11, "basepkg", "1.0", name, data)
    with serve(double.app) as server:
        yield double, server.url


@pytest.fixture(scope="module")
def proxy(gitlab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    _, url = gitlab
    directory = tmp_path_factory.mktemp("proxy")
    sources = [
        {"name": "platform", "gitlab_project": 11},
        {"name": "secret", "gitlab_project": "acme/secret"},
    ]
    extra = f"""
[auth]
anonymous_read = false
passthrough = true
realm = "acme packages"

[upload]
default_source = "platform"
max_size = "2MiB"

[[users]]
name = "ci"
password = "${{CI_PROXY_PASSWORD}}"
read = ["*"]
upload = ["platform"]
gitlab_token = "${{CI_GITLAB_TOKEN}}"

[[users]]
name = "reader"
password_hash = "{hash_password(READER_PASSWORD)}"
read = ["platform"]
"""
    config = write_config(directory, url, sources, token=READER_TOKEN, extra=extra)
    (directory / "tmp").mkdir()  # where the proxy spools uploads: checked for leftovers
    env = {
        "CI_PROXY_PASSWORD": CI_PASSWORD,
        "CI_GITLAB_TOKEN": DEPLOY_TOKEN,
        "TMPDIR": str(directory / "tmp"),
    }
    process = start_proxy(config, env=env)
    yield process
    process.stop()


def index_url(proxy: ProxyProcess, user: str, password: str) -> str:
    return proxy.url.replace("http://", f"http://{user}:{password}@") + "/simple/"


def dists(directory: Path, *builds: tuple[str, bytes]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in builds:
        (directory / name).write_bytes(data)
        paths.append(directory / name)
    return paths


def basic_password(authorization: str) -> tuple[str, str]:
    user, _, password = base64.b64decode(authorization.split(" ", 1)[1]).decode().partition(":")
    return user, password


def test_twine_uploads_a_wheel_and_an_sdist_with_the_translated_token(
    gitlab, proxy, tmp_path: Path
) -> None:
    double, _ = gitlab
    before = len(double.uploads())
    wheel, sdist = make_wheel("Acme.Tool", "1.0.0"), make_sdist("Acme.Tool", "1.0.0")
    files = dists(tmp_path / "dist", wheel, sdist)
    result = twine_upload(
        f"{proxy.url}/upload/", files, user="ci", password=CI_PASSWORD, home=tmp_path / "home"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    received = double.uploads()[before:]
    assert len(received) == 2
    for recorded, (_, data) in zip(received, (wheel, sdist), strict=True):
        assert recorded.method == "POST"
        assert recorded.fields["sha256_digest"] == hashlib.sha256(data).hexdigest()
        assert recorded.fields["md5_digest"] == hashlib.md5(data).hexdigest()
        assert recorded.fields["name"] == "Acme.Tool"
        assert basic_password(recorded.headers["authorization"])[1] == DEPLOY_TOKEN
        assert not any(CI_PASSWORD in value for value in recorded.headers.values())
    stored = {f.filename: f for f in double.files if f.project_id == 11}
    assert stored[wheel[0]].content == wheel[1]


def test_a_second_upload_of_the_same_file_fails_with_409(gitlab, proxy, tmp_path: Path) -> None:
    double, _ = gitlab
    files = dists(tmp_path / "dist", make_wheel("dup-pkg", "1.0"))
    url = f"{proxy.url}/upload/platform"  # no trailing slash, no redirect
    first = twine_upload(url, files, user="ci", password=CI_PASSWORD, home=tmp_path / "home")
    assert first.returncode == 0, first.stdout + first.stderr
    second = twine_upload(url, files, user="ci", password=CI_PASSWORD, home=tmp_path / "home")
    assert second.returncode != 0
    assert "409" in second.stdout + second.stderr
    response = httpx2.put(
        f"{proxy.url}/upload/platform/",
        auth=("ci", CI_PASSWORD),
        data={"name": "dup-pkg", "version": "1.0", ":action": "file_upload"},
        files={"content": (files[0].name, files[0].read_bytes())},
    )
    assert response.status_code == 409
    assert response.text == f"File already exists: {files[0].name}\n"
    assert [f.filename for f in double.files].count(files[0].name) == 1


def test_uv_publish_then_check_url_skips_and_pip_installs_the_new_version(
    gitlab, proxy, tmp_path: Path
) -> None:
    double, _ = gitlab
    home = tmp_path / "home"
    simple = index_url(proxy, "ci", CI_PASSWORD)
    # The page of basepkg is cached before the upload: the upload must invalidate it.
    assert httpx2.get(f"{proxy.url}/simple/basepkg/", auth=("ci", CI_PASSWORD)).status_code == 200
    files = dists(tmp_path / "dist", make_wheel("basepkg", "2.0"), make_sdist("basepkg", "2.0"))
    result = uv_publish(f"{proxy.url}/upload", files, user="ci", password=CI_PASSWORD, home=home)
    assert result.returncode == 0, result.stderr
    uploads = len(double.uploads())
    again = uv_publish(
        f"{proxy.url}/upload/",
        files,
        user="ci",
        password=CI_PASSWORD,
        home=home,
        check_url=simple,
    )
    assert again.returncode == 0, again.stderr
    assert len(double.uploads()) == uploads  # both files skipped: the index lists their hashes
    installed = pip_install(simple, tmp_path / "site", "basepkg==2.0", home=home)
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "site" / "basepkg-2.0.dist-info").is_dir()
    wheel = files[0]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    served = httpx2.get(f"{proxy.url}/files/{digest}/{wheel.name}", auth=("ci", CI_PASSWORD))
    assert served.content == wheel.read_bytes()


@pytest.mark.parametrize(
    ("path", "package"),
    [("/legacy/", "legacy-pkg"), ("/", "root-pkg"), ("/legacy/platform/", "legacy-named-pkg")],
)
def test_twine_uploads_where_other_indexes_take_uploads(
    gitlab, proxy, tmp_path: Path, path: str, package: str
) -> None:
    """PyPI's /legacy/, and the index URL without /simple/ (GitLab's, Nexus's convention)."""
    double, _ = gitlab
    files = dists(tmp_path / "dist", make_wheel(package, "1.0"))
    result = twine_upload(
        proxy.url + path, files, user="ci", password=CI_PASSWORD, home=tmp_path / "home"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    stored = [f for f in double.files if f.filename == files[0].name]
    assert [(f.project_id, f.content) for f in stored] == [(11, files[0].read_bytes())]


def test_uv_publish_to_legacy_and_a_get_there_explains(gitlab, proxy, tmp_path: Path) -> None:
    double, _ = gitlab
    files = dists(tmp_path / "dist", make_wheel("uv-legacy-pkg", "1.0"))
    home = tmp_path / "home"
    result = uv_publish(f"{proxy.url}/legacy/", files, user="ci", password=CI_PASSWORD, home=home)
    assert result.returncode == 0, result.stderr
    assert any(f.filename == files[0].name and f.project_id == 11 for f in double.files)
    explained = httpx2.get(f"{proxy.url}/legacy/")  # no credentials needed to read how
    assert explained.status_code == 200
    assert f"twine upload --repository-url {proxy.url}/legacy/ dist/*" in explained.text


def test_a_client_digest_that_does_not_match_is_refused(gitlab, proxy) -> None:
    double, _ = gitlab
    uploads = len(double.uploads())
    name, data = make_wheel("digest-pkg", "1.0")
    response = httpx2.post(
        f"{proxy.url}/upload/",
        auth=("ci", CI_PASSWORD),
        data={"name": "digest-pkg", "version": "1.0", "sha256_digest": "0" * 64},
        files={"content": (name, data)},
    )
    assert response.status_code == 400
    assert "sha256_digest does not match" in response.text
    assert len(double.uploads()) == uploads


def test_upload_with_gitlab_down_is_502_naming_it(gitlab, proxy) -> None:
    double, _ = gitlab
    name, data = make_wheel("down-pkg", "1.0")
    double.down_status = 503
    try:
        response = httpx2.post(
            f"{proxy.url}/upload/",
            auth=("ci", CI_PASSWORD),
            data={"name": "down-pkg", "version": "1.0"},
            files={"content": (name, data)},
        )
    finally:
        double.down_status = None
    assert response.status_code == 502
    assert response.text == f"upload of {name} failed: upstream platform unavailable: HTTP 503\n"
    assert not any(f.filename == name for f in double.files)


def _temp_files(proxy: ProxyProcess) -> list[str]:
    """Files in the proxy's TMPDIR, and files under it the proxy still holds open."""
    tmp = Path(proxy.args[proxy.args.index("--config") + 1]).parent / "tmp"
    return [p.name for p in tmp.iterdir()] + proxy.open_files_under(tmp)


TOO_LARGE = "the upload is larger than the limit of 2 MiB\n"


def test_an_upload_over_max_size_is_refused_by_its_content_length(gitlab, proxy) -> None:
    double, _ = gitlab
    uploads = len(double.uploads())
    name, data = make_wheel("big-pkg", "1.0", pad_bytes=3 * 2**20)
    response = httpx2.post(
        f"{proxy.url}/upload/",
        auth=("ci", CI_PASSWORD),
        data={"name": "big-pkg", "version": "1.0"},
        files={"content": (name, data)},
    )
    assert response.status_code == 413
    assert response.text == TOO_LARGE
    assert len(double.uploads()) == uploads
    assert _temp_files(proxy) == []


def test_an_upload_without_length_is_cut_where_it_passes_max_size(gitlab, proxy) -> None:
    double, _ = gitlab
    uploads = len(double.uploads())
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig-pkg\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        'filename="big_pkg-1.0-py3-none-any.whl"\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:  # chunked: the proxy learns the size only by reading it
        yield head
        for _ in range(3 * 16):  # 3 MiB of file in 64 KiB chunks, past the 1 MiB spool in memory
            yield b"\1" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx2.post(
        f"{proxy.url}/upload/",
        auth=("ci", CI_PASSWORD),
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert response.text == TOO_LARGE
    assert len(double.uploads()) == uploads
    assert _temp_files(proxy) == []  # the spool file that took the first 2 MiB is gone


def test_twine_shows_the_size_refusal(gitlab, proxy, tmp_path: Path) -> None:
    files = dists(tmp_path / "dist", make_wheel("big-pkg", "2.0", pad_bytes=3 * 2**20))
    result = twine_upload(
        f"{proxy.url}/upload/", files, user="ci", password=CI_PASSWORD, home=tmp_path / "home"
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "HTTPError: 413 Request Entity Too Large" in output, output


# --- the access matrix: one test per row ------------------------------------------------------


def test_anonymous_is_challenged(proxy) -> None:
    for path in ("/", "/simple/", "/simple/basepkg/", "/files/" + "a" * 64 + "/x-1.0.tar.gz"):
        response = httpx2.get(proxy.url + path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Basic realm="acme packages"'
    assert httpx2.post(f"{proxy.url}/upload/", data={"name": "x"}).status_code == 401


def test_wrong_password_is_challenged(proxy, tmp_path: Path) -> None:
    response = httpx2.get(f"{proxy.url}/simple/", auth=("reader", "not-the-password"))
    assert response.status_code == 401
    assert "www-authenticate" in response.headers
    files = dists(tmp_path / "dist", make_wheel("never-pkg", "1.0"))
    result = twine_upload(
        f"{proxy.url}/upload/", files, user="ci", password="wrong", home=tmp_path / "home"
    )
    assert result.returncode != 0
    assert "401" in result.stdout + result.stderr


def test_read_only_user_reads_its_sources_and_may_not_upload(proxy, tmp_path: Path) -> None:
    auth = ("reader", READER_PASSWORD)
    root = httpx2.get(f"{proxy.url}/simple/", auth=auth, headers={"accept": "text/html"})
    assert root.status_code == 200
    assert "basepkg" in root.text and "secretpkg" not in root.text
    assert httpx2.get(f"{proxy.url}/simple/secretpkg/", auth=auth).status_code == 404
    installed = pip_install(
        index_url(proxy, "__token__", READER_PASSWORD),
        tmp_path / "site",
        "basepkg==1.0",
        home=tmp_path / "home",
    )
    assert installed.returncode == 0, installed.stderr
    files = dists(tmp_path / "dist", make_wheel("reader-pkg", "1.0"))
    result = twine_upload(
        f"{proxy.url}/upload/",
        files,
        user="reader",
        password=READER_PASSWORD,
        home=tmp_path / "home",
    )
    assert result.returncode != 0
    assert "403" in result.stdout + result.stderr


def test_upload_user_may_not_upload_to_a_source_it_lacks(gitlab, proxy) -> None:
    double, _ = gitlab
    uploads = len(double.uploads())
    name, data = make_wheel("other-pkg", "1.0")
    response = httpx2.post(
        f"{proxy.url}/upload/secret/",
        auth=("__token__", CI_PASSWORD),
        data={"name": "other-pkg", "version": "1.0"},
        files={"content": (name, data)},
    )
    assert response.status_code == 403
    assert response.text == "user ci may not upload to secret\n"
    assert len(double.uploads()) == uploads


def test_passthrough_job_token_reads_what_gitlab_allows_and_uploads_as_itself(
    gitlab, proxy, tmp_path: Path
) -> None:
    double, _ = gitlab
    auth = ("gitlab-ci-token", JOB_TOKEN)
    root = httpx2.get(f"{proxy.url}/simple/", auth=auth, headers={"accept": "text/html"})
    assert root.status_code == 200
    assert "basepkg" in root.text and "secretpkg" not in root.text
    assert httpx2.get(f"{proxy.url}/simple/secretpkg/", auth=auth).status_code == 404
    files = dists(tmp_path / "dist", make_wheel("job-pkg", "1.0"))
    result = twine_upload(
        f"{proxy.url}/upload/",
        files,
        user="gitlab-ci-token",
        password=JOB_TOKEN,
        home=tmp_path / "home",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = double.uploads()[-1]
    assert basic_password(recorded.headers["authorization"]) == ("gitlab-ci-token", JOB_TOKEN)
    assert httpx2.get(f"{proxy.url}/simple/", auth=("gitlab-ci-token", "nope")).status_code == 401
    name, data = make_wheel("job-pkg", "2.0")
    refused = httpx2.post(
        f"{proxy.url}/upload/",
        auth=("gitlab-ci-token", "not-a-job-token"),
        data={"name": "job-pkg", "version": "2.0"},
        files={"content": (name, data)},
    )
    assert refused.status_code == 401  # GitLab's verdict on the passthrough credentials
    assert refused.headers["www-authenticate"] == 'Basic realm="acme packages"'
    assert "not-a-job-token" not in refused.text


def test_user_without_access_to_a_source_is_not_served_its_cached_file(gitlab, proxy) -> None:
    double, _ = gitlab
    secret = next(f for f in double.files if f.name == "secretpkg")
    url = f"{proxy.url}/files/{secret.sha256}/{secret.filename}"
    assert httpx2.get(url, auth=("ci", CI_PASSWORD)).content == secret.content  # now cached
    refused = httpx2.get(url, auth=("reader", READER_PASSWORD))
    assert refused.status_code == 404
    assert secret.content not in refused.content
    served = httpx2.get(url, auth=("ci", CI_PASSWORD))
    assert served.headers["x-cache"] == "HIT"
    assert "public" not in served.headers["cache-control"]


def test_no_password_or_token_reaches_the_log_and_no_password_reaches_gitlab(gitlab, proxy) -> None:
    double, _ = gitlab
    log = proxy.log()
    assert "uploaded" in log  # the log is the one the uploads above wrote to
    for secret in SECRETS:
        assert secret not in log
    sent = [value for request in double.requests for value in request.headers.values()]
    assert any(DEPLOY_TOKEN in basic_password(v)[1] for v in sent if v.startswith("Basic "))
    for value in sent:
        decoded = basic_password(value)[1] if value.startswith("Basic ") else value
        assert CI_PASSWORD not in decoded and READER_PASSWORD not in decoded
