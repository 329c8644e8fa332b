"""``promtool`` (Prometheus's rule checker and rule unit-test runner), fetched from Debian on first use.

The binary ships in Debian's ``prometheus`` package; ``apt-get download`` fetches the .deb without
installing the server (apt checks it against the signed archive index), and ``dpkg-deb -x`` unpacks it
into the tools cache (``GOBLIN_TOOLS_CACHE``, default ``~/.cache/goblin/tools``, shared with helm), where
later runs find it without touching the network. ``GOBLIN_PROMTOOL`` names an installed promtool instead.
When apt has no package lists yet (a fresh machine) and we are root, ``apt-get update`` runs once first.

Commands (``python -m goblin_tools.promtool ...``): ``path`` prints the binary's path (fetching it when
needed); anything else is passed to promtool itself, e.g. ``check rules deploy/helm/goblin/rules/*.yaml``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from goblin_tools.deploy_tools import ToolError, cache_dir

PACKAGE = "prometheus"
_BINARY = Path("usr/bin/promtool")


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def _download(directory: Path) -> Path:
    """The package's .deb downloaded into ``directory`` (apt-get update first if apt knows no version)."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise ToolError(
            "promtool: this machine has no apt-get/dpkg-deb to fetch Debian's prometheus package; "
            "install promtool and set GOBLIN_PROMTOOL to its path"
        )
    result = _run(["apt-get", "download", "-q", PACKAGE], cwd=directory)
    if result.returncode != 0 and os.geteuid() == 0:
        # A machine whose package lists were never fetched cannot locate the package: fetch them once.
        _run(["apt-get", "update", "-q"])
        result = _run(["apt-get", "download", "-q", PACKAGE], cwd=directory)
    debs = sorted(directory.glob(f"{PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        output = (result.stderr or result.stdout).strip()[-500:]
        raise ToolError(f"promtool: `apt-get download {PACKAGE}` failed: {output}")
    return debs[-1]


def ensure_promtool() -> Path:
    """The path of a working ``promtool``, fetched and unpacked on first use (safe across processes)."""
    if given := os.environ.get("GOBLIN_PROMTOOL"):
        return Path(given)
    root = cache_dir() / "promtool"
    found = sorted(root.glob(f"*/{_BINARY}"))
    if found:
        return found[-1]
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes must not download twice or half-unpack
        found = sorted(root.glob(f"*/{_BINARY}"))
        if found:
            return found[-1]
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch.") as tmp:
            deb = _download(Path(tmp))
            unpacked = Path(tmp) / "root"
            result = _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
            if result.returncode != 0 or not (unpacked / _BINARY).is_file():
                raise ToolError(f"promtool: unpacking {deb.name} failed: {result.stderr.strip()[-500:]}")
            # The version directory appears whole or not at all.
            target = root / deb.stem
            os.replace(unpacked, target)
    binary = target / _BINARY
    version = _run([str(binary), "--version"])
    if version.returncode != 0:
        raise ToolError(f"promtool from {deb.name} does not run: {version.stderr.strip()[-500:]}")
    return binary


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; the caller reads returncode, stdout and stderr."""
    return _run([str(ensure_promtool()), *args], cwd=cwd)


def main(argv: list[str]) -> int:
    """``path`` prints where promtool is; other arguments run it."""
    try:
        binary = ensure_promtool()
    except ToolError as exc:
        print(exc, file=sys.stderr)
        return 2
    if argv[:1] == ["path"]:
        print(binary)
        return 0
    return subprocess.call([str(binary), *argv])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
