"""Where the files the simulator ships live: the repository's folders, or the installed
package's (`pip install .` puts sim/, hv/, guests/ and scenarios/ under acrn_sim/)."""

from __future__ import annotations

from pathlib import Path

# sim/ sits in the repository's root, or in site-packages/acrn_sim/ once installed
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def shown(path: str | Path) -> str:
    """How a file is named to a guest (the first word of a Multiboot command line): a file
    that ships with the simulator by its path in the package (`guests/images/hello.elf`),
    however it was reached; any other file as given. So a run's results do not depend on
    where the repository or the package lies: a longer command line takes the guest longer to
    read, and moves what the loader places after it."""
    try:
        return str(Path(path).resolve().relative_to(PACKAGE_ROOT))
    except (ValueError, OSError):
        return str(path)


def locate(path: str | Path) -> str:
    """`path` as given when it exists; else, when it is relative and names a file that ships
    with the simulator (`guests/images/hello.elf`, `scenarios/two_user_vms.xml`), that file.
    So the README's commands work from any directory. Anything else is returned unchanged, for
    the caller's "not found" error to name."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return str(path)
    shipped = PACKAGE_ROOT / p
    return str(shipped) if shipped.exists() else str(path)
