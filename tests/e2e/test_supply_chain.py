"""End to end, the supply-chain guard with real pip and uv in front of a small static
PEP 691 index (upload times, provenance, project status) served on loopback."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import pip_install, printed, uv_install
from tests.osv_export import advisory, write_export
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import Server, serve
from tests.sigstore_double import SigstoreDouble
from tests.static_index import StaticFile, StaticIndex, provenance_document
from tests.waiting import wait_until

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=30)
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as opened:
        yield opened


def _installed(target: Path) -> set[str]:
    return {p.name for p in target.iterdir() if p.name.endswith(".dist-info")}


@contextmanager
def _proxy(
    tmp_path: Path,
    public: Server,
    extra: str,
    *args: str,
    source: str = "",
    env: dict[str, str] | None = None,
) -> Iterator[ProxyProcess]:
    """The proxy in front of `public` (its one source, `public`, with `source` lines added)."""
    sources = [{"name": "public", "url": public.url + "/simple/"}]
    config = write_config(tmp_path, "http://127.0.0.1:9", sources, extra=source + extra)
    proxy = start_proxy(config, *args, env=env)
    try:
        yield proxy
    finally:
        proxy.stop()


def _trail(tmp_path: Path) -> list[dict[str, object]]:
    """The audit trail's lines (the default path, in the cache directory)."""
    text = (tmp_path / "cache" / "audit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _url_pin(proxy: ProxyProcess, file: StaticFile) -> str:
    """A requirement pinned to the file's URL, as uv.lock and pylock.toml pin it."""
    name = file.filename.split("-")[0]
    return f"{name} @ {proxy.url}/files/{file.sha256}/{file.filename}"


def test_a_release_younger_than_min_age_is_held_until_exempted(
    tmp_path: Path, stack: ExitStack
) -> None:
    index = StaticIndex()
    old = index.add_wheel("fresh", "0.9", OLD)
    new = index.add_wheel("fresh", "1.0", NOW - timedelta(hours=1))
    home = tmp_path / "home"
    public = stack.enter_context(serve(index.app))
    with _proxy(tmp_path, public, '[policy]\nmin_age = "1d"\n') as proxy:
        simple = f"{proxy.url}/simple/"
        page = httpx2.get(f"{simple}fresh/", headers=JSON).json()
        assert page["versions"] == ["0.9"]
        # listed yanked with the rule: resolvers pass it by, an exact pin reaches the 404
        assert [f["filename"] for f in page["files"]] == [old.filename, new.filename]
        assert "yanked" not in page["files"][0]
        rule = r'held by \[policy\] min_age = "1d": uploaded \S+Z, available from \S+Z'
        assert re.fullmatch(rule, page["files"][1]["yanked"])
        held = httpx2.get(f"{proxy.url}/files/{new.sha256}/{new.filename}")
        assert held.status_code == 404
        reason = held.text.strip()
        assert reason == f"{new.filename} is {page['files'][1]['yanked']}"
        assert 'held by [policy] min_age = "1d"' in reason and "available from" in reason
        # pip and uv print the status line of a failed download: it carries the reason
        printed_reason = reason.replace('"', "'")

        requirements = tmp_path / "pinned.txt"
        requirements.write_text(f"fresh==1.0 --hash=sha256:{new.sha256}\n")
        for install in (pip_install, uv_install):
            target = tmp_path / f"{install.__name__}-latest"
            done = install(simple, target, "fresh", home=home)
            assert done.returncode == 0, done.stderr
            assert _installed(target) == {"fresh-0.9.dist-info"}
            for pin in (["-r", str(requirements)], [_url_pin(proxy, new)]):
                pinned = install(simple, tmp_path / "x", *pin, home=home)
                assert pinned.returncode != 0
                shown = printed(pinned)
                assert "404" in shown and printed_reason in shown, pinned.stderr

    exempt = '[policy]\nmin_age = "1d"\nexempt = ["fresh==1.0"]\n'
    with _proxy(tmp_path, public, exempt) as proxy:
        for install in (pip_install, uv_install):
            target = tmp_path / f"{install.__name__}-exempt"
            done = install(f"{proxy.url}/simple/", target, "-r", str(requirements), home=home)
            assert done.returncode == 0, done.stderr
            assert _installed(target) == {"fresh-1.0.dist-info"}


def test_a_vulnerable_version_is_skipped_unless_pinned_and_its_delivery_is_audited(
    tmp_path: Path,
) -> None:
    index = StaticIndex()
    index.add_wheel("vuln", "1.0", OLD)
    bad = index.add_wheel("vuln", "1.1", OLD)
    found = advisory("GHSA-aaaa-bbbb-cccc", "vuln", versions=["1.1"], aliases=["CVE-2025-0001"])
    write_export(tmp_path / "osv.zip", [found])
    extra = '[policy]\nvulnerabilities = "osv.zip"\n'
    home = tmp_path / "home"
    with serve(index.app) as public, _proxy(tmp_path, public, extra) as proxy:
        simple = f"{proxy.url}/simple/"
        page = httpx2.get(f"{simple}vuln/", headers=JSON).json()
        yanked = {f["filename"]: f.get("yanked") for f in page["files"]}
        assert yanked[bad.filename] == "GHSA-aaaa-bbbb-cccc (CVE-2025-0001)"
        for install in (pip_install, uv_install):
            target = tmp_path / f"{install.__name__}-any"
            done = install(simple, target, "vuln", home=home)
            assert done.returncode == 0, done.stderr
            assert _installed(target) == {"vuln-1.0.dist-info"}
            target = tmp_path / f"{install.__name__}-pinned"
            done = install(simple, target, "vuln==1.1", home=home)
            assert done.returncode == 0, done.stderr
            assert _installed(target) == {"vuln-1.1.dist-info"}
            assert "GHSA-aaaa-bbbb-cccc" in done.stdout + done.stderr
    lines = [
        json.loads(line)
        for line in (tmp_path / "cache" / "audit.jsonl").read_text().split("\n")
        if line
    ]
    served = [line for line in lines if line["file"] == bad.filename]
    assert served and all(line["advisories"] == ["GHSA-aaaa-bbbb-cccc"] for line in served)


def test_an_excluded_public_name_is_a_404_with_the_rule(tmp_path: Path) -> None:
    index = StaticIndex()
    secret = index.add_wheel("acme-secret", "1.0", OLD)
    index.add_wheel("numpy", "2.0", OLD)
    rules = 'exclude = ["acme-*"]\n'
    with serve(index.app) as public, _proxy(tmp_path, public, "", source=rules) as proxy:
        simple = f"{proxy.url}/simple/"
        assert httpx2.get(f"{simple}numpy/").status_code == 200
        page = httpx2.get(f"{simple}acme-secret/")
        assert page.status_code == 404
        assert page.text.strip() == (
            "acme-secret is not served from source 'public': its exclude has 'acme-*'"
        )
        file = httpx2.get(f"{proxy.url}/files/{secret.sha256}/{secret.filename}")
        assert file.status_code == 404
        failed = pip_install(simple, tmp_path / "t", "acme-secret", home=tmp_path / "home")
        assert failed.returncode != 0
    assert not any("acme-secret" in path for path in index.requests)  # never even asked


def test_provenance_and_project_status_pass_through(tmp_path: Path) -> None:
    index = StaticIndex()
    attested = index.add_wheel("attested", "1.0", OLD, provenance_document("attested-1.0"))
    signed = index.add_wheel("signed", "1.0", OLD)
    sigstore = SigstoreDouble()
    sigstore.install(tmp_path / "xdg")  # the trust root the proxy verifies against, offline
    signed.provenance = json.dumps(sigstore.provenance(signed.filename, signed.sha256)).encode()
    doomed = index.add_wheel("doomed", "1.0", OLD)
    index.status["doomed"] = ("quarantined", "malware reported")
    index.status["attested"] = ("archived", None)
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    with serve(index.app) as public, _proxy(tmp_path, public, "", env=env) as proxy:
        simple = f"{proxy.url}/simple/"
        page = httpx2.get(f"{simple}attested/", headers=JSON).json()
        assert page["meta"]["project-status"] == {"status": "archived"}
        [entry] = page["files"]
        link = f"../../files/{attested.sha256}/{attested.filename}.provenance"
        assert entry["provenance"] == link
        html = httpx2.get(f"{simple}attested/").text
        assert f'data-provenance="{link}"' in html
        assert '<meta name="pypi:project-status" content="archived">' in html
        url = f"{simple}attested/{link}"
        for _ in range(2):
            served = httpx2.get(url)
            assert served.status_code == 200
            assert served.content == attested.provenance
            assert served.headers["x-provenance"].startswith("not verified: ")
        asked = [p for p in index.requests if p.startswith("/provenance/")]
        assert asked == [f"/provenance/{attested.filename}"]  # fetched once, then kept

        httpx2.get(f"{simple}signed/")  # the page lists it: the proxy knows where it is
        verified = httpx2.get(f"{proxy.url}/files/{signed.sha256}/{signed.filename}.provenance")
        assert verified.content == signed.provenance
        assert verified.headers["x-provenance"] == (
            "verified: 1 attestation (publish) by Google release@acme.iam.gserviceaccount.com"
        )

        quarantined = httpx2.get(f"{simple}doomed/", headers=JSON).json()
        assert quarantined["files"] == []
        assert quarantined["meta"]["project-status"] == {
            "status": "quarantined",
            "reason": "malware reported",
        }
        file = httpx2.get(f"{proxy.url}/files/{doomed.sha256}/{doomed.filename}")
        assert file.status_code == 404
        assert "quarantined" in file.text and "malware reported" in file.text


USERS = """
[auth]
anonymous_read = false
[[users]]
name = "alice"
password = "alice-secret-pw"
[[users]]
name = "bob"
password = "bob-secret-pw"
"""


def test_the_audit_trail_has_one_line_per_download_across_two_workers(tmp_path: Path) -> None:
    index = StaticIndex()
    files = [index.add_wheel(f"pkg-{n}", "1.0", OLD) for n in ("a", "b", "c")]
    with (
        serve(index.app) as public,
        _proxy(tmp_path, public, USERS, "--workers", "2") as proxy,
    ):
        alice = httpx2.BasicAuth("alice", "alice-secret-pw")
        bob = httpx2.BasicAuth("bob", "bob-secret-pw")
        for file in files:  # the pages tell the proxy where each file is
            project = file.filename.split("-")[0].replace("_", "-")
            assert httpx2.get(f"{proxy.url}/simple/{project}/", auth=bob).status_code == 200
        expected: list[tuple[str, str]] = []
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = []
            for round in range(6):
                for file in files:
                    auth, who = (alice, "alice") if round % 2 else (bob, "bob")
                    url = f"{proxy.url}/files/{file.sha256}/{file.filename}"
                    answers.append(pool.submit(httpx2.get, url, auth=auth, timeout=30))
                    expected.append((file.filename, who))
            assert all(a.result().status_code == 200 for a in answers)
        assert httpx2.head(url, auth=bob).status_code == 200  # a HEAD sends no file: no line
        wait_until(lambda: len(_trail(tmp_path)) >= len(expected), "every download audited")
        lines = _trail(tmp_path)
        assert sorted((line["file"], line["identity"]) for line in lines) == sorted(expected)
        assert {line["client"] for line in lines} == {"127.0.0.1"}
        assert {line["source"] for line in lines} == {"public"}
        assert {line["cache"] for line in lines} <= {"hit", "miss"}
        trail = (tmp_path / "cache" / "audit.jsonl").read_text()
        assert "secret-pw" not in trail

        command = [
            sys.executable,
            "-m",
            "gitlab_pypi_proxy",
            "audit",
            "--config",
            str(tmp_path / "proxy.toml"),
        ]
        asked = subprocess.run(
            [*command, "--package", "pkg-a==1.0"], capture_output=True, text=True, timeout=60
        )
        assert asked.returncode == 0, asked.stderr
        rows = asked.stdout.splitlines()
        assert len(rows) == 7 and rows[-1].startswith("6 deliveries of pkg-a==1.0")
        assert all(files[0].sha256 in row for row in rows[:-1])
        by_digest = subprocess.run(
            [*command, "--sha256", files[1].sha256], capture_output=True, text=True, timeout=60
        )
        assert by_digest.stdout.splitlines()[-1].startswith("6 deliveries of")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reads_the_advisories_again_and_a_bad_export_keeps_them(
    tmp_path: Path, workers: str
) -> None:
    index = StaticIndex()
    first, second = index.add_wheel("lib", "1.0", OLD), index.add_wheel("lib", "1.1", OLD)
    export = tmp_path / "osv.zip"
    write_export(export, [advisory("GHSA-1111-1111-1111", "lib", versions=["1.1"])])
    extra = '[policy]\nvulnerabilities = "osv.zip"\n'
    with (
        serve(index.app) as public,
        _proxy(tmp_path, public, extra, "--workers", workers) as proxy,
    ):

        def yanked() -> dict[str, object]:
            page = httpx2.get(f"{proxy.url}/simple/lib/", headers=JSON).json()
            return {f["filename"]: f.get("yanked", False) for f in page["files"]}

        assert yanked() == {first.filename: False, second.filename: "GHSA-1111-1111-1111"}

        def loads() -> int:  # one line per worker that read an export
            return proxy.log().count(": 1 advisories for 1 projects")

        loaded = wait_until(lambda: loads() >= int(workers) and loads(), "every worker up", 60)
        write_export(export, [advisory("GHSA-2222-2222-2222", "lib", versions=["1.0"])])
        os.kill(proxy.process.pid, signal.SIGHUP)
        now = {first.filename: "GHSA-2222-2222-2222", second.filename: False}
        # every worker read it (in place, or a replacement at its start) before the export
        # breaks: a replacement still starting would read the broken one and not replace
        wanted = loaded + int(workers)
        wait_until(lambda: loads() >= wanted, "every worker to read the new advisories", 60)

        def every_worker_says_now() -> bool:
            try:
                return all(yanked() == now for _ in range(6))
            except httpx2.TransportError:  # a connection the worker uvicorn retired had taken
                return False

        wait_until(every_worker_says_now, "the new advisories", 60)

        export.write_bytes(b"this is no zip")
        os.kill(proxy.process.pid, signal.SIGHUP)
        wait_until(lambda: "not a readable zip file" in proxy.log(), "the bad export logged", 60)
        assert all(yanked() == now for _ in range(6))
        assert proxy.process.poll() is None
        assert "Traceback" not in proxy.log()


def test_gitlab_upload_times_hold_a_fresh_private_release_when_asked_to(tmp_path: Path) -> None:
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_token("glpat-guard", read={11})
    # GitLab keeps a name as uploaded: the Packages API finds Acme_Models only by a part of it
    for name in ("inhouse", "Acme_Models"):
        for version, created in (("1.0", OLD), ("1.1", NOW - timedelta(hours=1))):
            filename, data = make_wheel(name, version)
            double.add_package_file(11, name, version, filename, data, created_at=created)
    fresh = hashlib.sha256(make_wheel("inhouse", "1.1")[1]).hexdigest()
    extra = '[policy]\nmin_age = "1d"\nmin_age_sources = ["platform"]\n'
    with serve(double.app) as gitlab:
        sources = [{"name": "platform", "gitlab_project": 11}]
        config = write_config(tmp_path, gitlab.url, sources, token="glpat-guard", extra=extra)
        proxy = start_proxy(config)
        try:
            simple = f"{proxy.url}/simple/"
            page = httpx2.get(f"{simple}inhouse/", headers=JSON).json()
            assert page["versions"] == ["1.0"]
            held = httpx2.get(f"{proxy.url}/files/{fresh}/inhouse-1.1-py3-none-any.whl")
            assert held.status_code == 404 and "held by [policy] min_age" in held.text
            target = tmp_path / "t"
            done = pip_install(simple, target, "inhouse", "acme-models", home=tmp_path / "home")
            assert done.returncode == 0, done.stderr
            assert _installed(target) == {"inhouse-1.0.dist-info", "acme_models-1.0.dist-info"}
        finally:
            proxy.stop()
