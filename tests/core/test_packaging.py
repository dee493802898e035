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
