"""Install Debian Chromium for the browser tests (`python -m tests.browser_setup`, run by `make install`).

Never fails the install: when Chromium cannot be installed it prints a loud reason and exits 0,
and tests/test_browser.py skips with the same explanation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
APT_TIMEOUT_S = 1800


def _warn(reason: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n!! browser tests will SKIP: {reason}\n{bar}\n", file=sys.stderr, flush=True)


def _apt(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", *args]
    print(f"+ {' '.join(cmd)}", flush=True)
    try:
        return subprocess.run(cmd, env=env, timeout=APT_TIMEOUT_S).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"apt-get failed: {exc}", file=sys.stderr)
        return False


def ensure_chromium() -> str | None:
    """Return None when /usr/bin/chromium is usable, else the reason it is not."""
    if CHROMIUM.exists():
        return None
    if not sys.platform.startswith("linux"):
        return f"{CHROMIUM} is missing and automatic install only works on Debian/Ubuntu Linux"
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and apt-get is not available; install Chromium by hand"
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and we are not root; run `sudo apt-get install -y chromium`"
    # `install` first: the package lists may already be fresh; update only if that fails.
    if not _apt("install", "-y", "--no-install-recommends", "chromium"):
        if not _apt("update") or not _apt("install", "-y", "--no-install-recommends", "chromium"):
            return "`apt-get install -y chromium` failed (see the output above)"
    if not CHROMIUM.exists():
        return f"apt-get finished but {CHROMIUM} is still missing"
    return None


def main() -> int:
    try:
        reason = ensure_chromium()
    except Exception as exc:  # never fail `make install`
        reason = f"unexpected error while installing chromium: {exc!r}"
    if reason is None:
        print(f"chromium ready: {CHROMIUM}", flush=True)
    else:
        _warn(reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
