"""The Qnet tests' io-pkt processes: stopped with SIGTERM (so modules unmount their own
mounts: ``<prefix>/net``, ``dev/bpf``) and any FUSE mount left below the test's
directory lazily unmounted, on every path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import sh


def _mounts_below(root: str) -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as fh:
        points = [ln.split()[1] for ln in fh if ln.split()[2].startswith("fuse")]
    return sorted((p for p in points if p.startswith(root + "/")), key=len, reverse=True)


@pytest.fixture
def stack_process(stack_process: object, tmp_path: object) -> Iterator[object]:
    made: list[object] = []

    def start(*args: str, **kw: object) -> object:
        sp = stack_process(*args, **kw)  # type: ignore[operator]
        made.append(sp)
        return sp

    yield start
    for sp in made:
        if sp.proc.poll() is None:  # type: ignore[attr-defined]
            sp.stop()  # type: ignore[attr-defined]
    for m in _mounts_below(str(tmp_path)):
        sh("fusermount3", "-u", "-z", m, check=False)
