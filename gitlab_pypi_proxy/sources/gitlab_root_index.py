"""A GitLab project's PyPI root index (GitLab 15.1+), kept in memory by each serving worker as a
set of normalized names: a hint that decides what may be asked of GitLab at once, never what a
page says.

A name in the set is one the project listed lately: its page very likely has files, so the
Packages API listing for its upload times may go out beside the page (one round trip where two
were); a name not in it, or any name while the set is not known, is asked as before (the listing
only once the page has files). The set is what the shared poll for names published to GitLab read
last (gitlab_pypi_proxy.index.name_poll: one root index request per project a minute for every
worker and replica, none of its own); the proxy's own uploads through this worker add their name
at once and keep it.
"""


class RootIndex:
    def __init__(self) -> None:
        self._names: frozenset[str] = frozenset()
        self._added: frozenset[str] = frozenset()  # uploaded through this worker

    def lists(self, name: str) -> bool:
        """Did the root index list normalized `name` when last read (or was it uploaded since)?"""
        return name in self._names

    def add(self, name: str) -> None:
        """`name` was uploaded through the proxy."""
        self._added |= {name}
        self._names |= {name}

    def update(self, names: frozenset[str]) -> None:
        """The names the root index listed when it was read last."""
        self._names = names | self._added
