"""``pip install .`` (a wheel, not -e) carries the bundled modules, the C header and the
console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_wheel_carries_modules_header_and_script(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path), REPO],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("io_pkt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = {p.name for p in (Path(REPO) / "modules").glob("*.py")}
    assert bundled and {f"modules/{n}" for n in bundled} <= names
    assert "stack/loader.py" in names and "rmgr/nodes.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "io-pkt = stack.main:main" in text


def test_installed_copy_finds_its_bundled_modules(tmp_path: Path) -> None:
    """An installed copy (not the checkout) resolves ``-d tap`` and ``-p pf`` to the
    modules installed beside it, whatever the working directory."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--target", str(site), REPO], check=True, capture_output=True, timeout=300)
    probe = ("import stack.loader as l\n"
             "for spec, kind in (('tap', 'driver'), ('pf', 'protocol'), ('vwire', 'driver')):\n"
             "    name, entry, where = l.find_module(spec, kind)\n"
             "    print(name, entry.kind, where)\n")
    run = tmp_path / "elsewhere"
    run.mkdir()
    r = subprocess.run([sys.executable, "-c", probe], cwd=run, capture_output=True, text=True,
                       env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["devnp-tap", "driver"], ["lsm-pf", "protocol"],
                                                ["devnp-vwire", "driver"]]
    for ln in lines:
        assert ln.split()[2].startswith(f"{site}/modules/"), ln
