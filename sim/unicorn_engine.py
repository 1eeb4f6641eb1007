"""Which Unicorn library runs guest code: the fast engine when it is built, else PyPI's.

The fast engine is Unicorn 2.1.4 built for x86 only with third_party/unicorn/store-path.patch
(guest stores to RAM that holds no translated code stay on QEMU's fast path; upstream PR #2337
and the rule of QEMU's notdirty_write). `make engine` (third_party/unicorn/build.sh) installs it
as <venv>/lib/acrn-sim/libunicorn.so.2. The 2.1.4 Python binding loads the library from the
directory named by LIBUNICORN_PATH, read once when `unicorn` is first imported
(unicorn/unicorn_py3/unicorn.py, __load_uc_lib), so `select()` runs from sim/__init__.py,
before any module imports unicorn. Both libraries give the same results; only speed differs.

    ACRN_SIM_ENGINE=pypi   use PyPI's library even when the fast one is built
    ACRN_SIM_ENGINE=fast   the same as unset (the fast one when built)
    LIBUNICORN_PATH=DIR    set by the user: left alone (and reported as such)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_ENGINE = "ACRN_SIM_ENGINE"
FAST_DIR = Path(sys.prefix) / "lib" / "acrn-sim"
FAST_LIB = FAST_DIR / "libunicorn.so.2"
FAST = "fast (Unicorn 2.1.4 + store-path patch)"
PYPI = "PyPI unicorn 2.1.4"
# A function the patch adds (qemu/accel/tcg/translate-all.c), exported like the rest of QEMU's
# per-target symbols: its presence tells the patched library from any other build.
_PATCH_SYMBOL = "tb_page_has_code_x86_64"


def select() -> None:
    """Point the binding at the fast library, unless told otherwise. Call before importing
    unicorn (it has no effect afterwards)."""
    wanted = os.environ.get(ENV_ENGINE, "")
    ours = str(FAST_DIR)
    current = os.environ.get("LIBUNICORN_PATH")
    if wanted == "pypi":
        if current == ours:  # inherited from a parent acrn-sim process: not the user's choice
            del os.environ["LIBUNICORN_PATH"]
    elif current is None and FAST_LIB.is_file():
        # Also inherited by child processes (the tests' CLI runs), which then agree.
        os.environ["LIBUNICORN_PATH"] = ours


def built() -> bool:
    """Whether the fast engine is installed in this environment."""
    return FAST_LIB.is_file()


def child_env(engine: str) -> dict[str, str]:
    """The environment of a child acrn-sim process that must run on `engine`: "fast" (when
    built, else it falls back to PyPI's) or "pypi". Used to compare the two engines' outputs."""
    env = dict(os.environ)
    env.pop("LIBUNICORN_PATH", None)
    env[ENV_ENGINE] = engine
    return env


def loaded_library() -> str:
    """The path of the libunicorn the binding loaded (imports unicorn)."""
    from unicorn.unicorn_py3.unicorn import uclib

    return uclib._name


def describe() -> str:
    """The engine in use, as `acrn-sim --version` and `acrn-sim bench` print it."""
    from unicorn.unicorn_py3.unicorn import uclib

    if hasattr(uclib, _PATCH_SYMBOL):
        return FAST
    path = Path(uclib._name)
    import unicorn

    if path.parent == Path(unicorn.__file__).parent / "lib":
        return PYPI
    return f"unicorn {unicorn.__version__} from {path}"


def is_fast() -> bool:
    return describe() == FAST
