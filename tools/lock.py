"""The install lock: write it from a venv, or check that a venv is exactly it.

    python tools/lock.py write VENV LOCK    # pip freeze of VENV -> LOCK (what `make lock` does)
    python tools/lock.py check VENV LOCK [--skip NAME ...]   # exit 1 naming every difference

The lock is a pip constraints file (`name==version` per line, sorted, comments on top): every
package of the `all,dev` install on the CPU torch, pip and setuptools included, danlu itself
excluded. `make setup` installs with it (`pip install -c`), so a fresh clone months later gets
the versions CI last tested; `check` then proves the venv equals it, so a reused venv that
drifted is repaired or named, never silently different.

Standard library only: it runs with any Python, before the venv has anything in it.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
from pathlib import Path

HEADER = """\
# danlu install lock: exact versions of every package of `pip install -e '.[all,dev]'`
# on the CPU build of torch, CPython {python} on {machine} Linux. `make setup` installs with it
# (pip -c); `make test-latest` tries the newest versions the ranges allow, `make lock` writes
# that venv's versions here. Do not edit by hand. Written {date} by tools/lock.py.
"""


def normalise(name: str) -> str:
    """PEP 503: `Foo_bar.baz` and `foo-bar-baz` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def freeze(venv: Path) -> dict[str, str]:
    """name -> version of everything installed in `venv` (editable installs excluded)."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        if not sep:  # `name @ url` (a direct reference) cannot be locked by version
            raise SystemExit(
                f"lock: {venv}: '{line}' is not a released version; install it from an index"
            )
        pins[normalise(name)] = version.strip()
    pins.pop("danlu", None)
    return pins


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"lock: {path}:{number}: expected name==version, got '{raw}'")
        pins[normalise(name)] = version.strip()
    return pins


def public(version: str) -> str:
    """The version without its local label: torch 2.13.0+cpu and 2.13.0 are one release."""
    return version.split("+", 1)[0]


def differences(locked: dict[str, str], installed: dict[str, str], skip: set[str]) -> list[str]:
    """One line per locked package that the venv lacks or has at another version."""
    found = []
    for name, version in sorted(locked.items()):
        if name in skip:
            continue
        have = installed.get(name)
        if have is None:
            found.append(f"{name}: locked {version}, not installed")
        elif public(have) != public(version):
            found.append(f"{name}: locked {version}, installed {have}")
    return found


def write(venv: Path, lock: Path) -> int:
    pins = freeze(venv)
    python, machine = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import platform as p; print(p.python_version(), p.machine())"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    head = HEADER.format(python=python, machine=machine, date=datetime.date.today().isoformat())
    body = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    lock.write_text(head + body)
    print(f"lock: {lock}: {len(pins)} packages from {venv}")
    return 0


def check(venv: Path, lock: Path, skip: set[str]) -> int:
    found = differences(read_lock(lock), freeze(venv), {normalise(s) for s in skip})
    for line in found:
        print(f"lock: {venv}: {line}", file=sys.stderr)
    if found:
        print(f"lock: {venv} differs from {lock} in {len(found)} packages", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["write", "check"])
    parser.add_argument("venv", type=Path)
    parser.add_argument("lock", type=Path)
    parser.add_argument("--skip", action="append", default=[], help="a locked name not to check")
    args = parser.parse_args(argv)
    if args.action == "write":
        return write(args.venv, args.lock)
    return check(args.venv, args.lock, set(args.skip))


if __name__ == "__main__":
    sys.exit(main())
