"""On-disk caches: index pages (TTL, stale-if-error) and distribution files (verified)."""
