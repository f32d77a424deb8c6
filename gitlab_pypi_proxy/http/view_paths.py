"""Which view a request path is under: `/<view>/simple/...`, `/<view>/files/...` and
`/<view>/pypi/...` are the index, the files and the JSON API of a `[[views]]` entry
(gitlab_pypi_proxy.index.views), the rest of the path is what it would be at the root. Access
control, the memo hits and the routes ask this one function, so the three agree on what a view's
path is."""

from collections.abc import Mapping

from gitlab_pypi_proxy.index.views import View

VIEW_PARTS = ("/simple", "/files/", "/pypi/")  # what may follow a view's name


def split_view(path: str, views: Mapping[str, View]) -> tuple[View | None, str]:
    """(the view, the path under it) for a path under a configured view; else (None, path)."""
    if not views or path.count("/") < 2:
        return None, path
    name, rest = path[1:].split("/", 1)
    view = views.get(name)
    if view is None or not ("/" + rest).startswith(VIEW_PARTS):
        return None, path
    return view, "/" + rest
