"""Byte counts as people read them: `20.0 GiB`, not `21474836480 bytes`."""


def human(size: float) -> str:
    """`size` bytes in the largest binary unit that keeps the number at least 1."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
