"""`cache verify`: every kept file hashed again; what no longer hashes to its sha256 is dropped
(the next client that asks fetches it anew)."""

import hashlib

from gitlab_pypi_proxy.storage.blobs import BlobStore

_READ = 1024 * 1024


def verify(blobs: BlobStore) -> tuple[int, list[str]]:
    """Rehash every blob (blocking). (how many were checked, the sha256 of those dropped)."""
    checked, dropped = 0, []
    for sha256 in blobs.digests():
        blob = blobs.open_now(sha256)
        if blob is None:
            dropped.append(sha256)  # missing, or of the wrong size: the store dropped it
            continue
        try:
            digest = hashlib.sha256()
            reader = blob.reader()
            while chunk := reader.read(_READ):
                digest.update(chunk)
        finally:
            blob.close()
        checked += 1
        if digest.hexdigest() != sha256:
            blobs.delete(sha256)
            dropped.append(sha256)
    return checked, dropped
