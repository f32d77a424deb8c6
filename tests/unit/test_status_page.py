"""The status page: every value escaped, client settings filled in, recent uploads listed."""

from pathlib import Path

from proxy.http.status_page import render, snippets
from proxy.sources.upstream_health import SourceState
from proxy.storage.uploads import KEEP, RecentUploads, Upload


def test_status_page_escapes_and_fills_in_the_url() -> None:
    html = render(
        "https://pypi.example.com/pypi/",
        [("<script>x</script>", "gitlab_project", SourceState().as_json(0.0))],
        {"Files cached": "0"},
        [],
    )
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    assert "index-url = https://pypi.example.com/pypi/simple/" in html
    assert "none yet" in html
    titles = [title for title, _ in snippets("http://10.0.0.5:8080/")]
    assert len(titles) == 5
    assert "trusted-host = 10.0.0.5" in snippets("http://10.0.0.5:8080/")[0][1]


async def test_recent_uploads_keep_the_newest_for_the_status_page(tmp_path: Path) -> None:
    uploads = RecentUploads(tmp_path)
    for number in range(KEEP + 5):
        await uploads.record(Upload(f"pkg-{number}.whl", "platform", "ci", at=1000.0 + number))
    again = RecentUploads(tmp_path)  # another worker over the same directory
    latest = await again.latest()
    assert [u.filename for u in latest[:2]] == [f"pkg-{KEEP + 4}.whl", f"pkg-{KEEP + 3}.whl"]
    assert len(latest) == KEEP
    html = render("http://proxy/", [], {}, latest)
    assert f"pkg-{KEEP + 4}.whl" in html and "none yet" not in html
    uploads.close()
    again.close()
