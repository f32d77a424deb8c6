"""Reading what earlier versions of the proxy stored: the records of the page, details and upload
caches are pickled, and a pickle names the module of each object's class. Those classes have
moved since (proxy.cache.pages → gitlab_pypi_proxy.storage.pages, ...), and the package itself
was named `proxy`: `Disk`, the diskcache Disk these caches use, finds each under its new name, so
a cache directory written by an earlier version is read as it is."""

import io
import pickle
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE

# (module, class) as earlier versions pickled it → the module it lives in now
MOVED = {
    ("proxy.cache.pages", "Entry"): "gitlab_pypi_proxy.storage.pages",
    ("proxy.cache.details", "Version"): "gitlab_pypi_proxy.storage.details",
    ("proxy.recent_uploads", "Upload"): "gitlab_pypi_proxy.storage.uploads",
}


_OLD_PACKAGE = "proxy"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = MOVED.get((module, name), module)
        if module == _OLD_PACKAGE or module.startswith(_OLD_PACKAGE + "."):
            module = "gitlab_pypi_proxy" + module.removeprefix(_OLD_PACKAGE)
        return super().find_class(module, name)


def loads(data: bytes) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


class Disk(diskcache.Disk):
    """diskcache's Disk, reading pickles whose classes have moved. A record kept in a file of its
    own (a big project's page: MiBs) is read from the file as it is unpickled, never held whole
    as bytes beside the objects it makes."""

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            if value is None:
                with open(f"{self._directory}/{filename}", "rb") as reader:
                    return _Unpickler(reader).load()
            return loads(bytes(value))
        return super().fetch(mode, filename, value, read)
