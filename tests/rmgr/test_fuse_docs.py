"""Issue 14, item 6: why the FUSE layer speaks the kernel protocol itself (not pyfuse3),
and why signals give EINTR despite SA_RESTART, are said where readers meet them: the
package docstring of rmgr.fuse, the session's, README.md, docs/fuse.md, docs/sockets.md.
The behaviour behind the second is checked by test_fuse_sa_restart.py."""

from __future__ import annotations

import os

import rmgr.fuse
import rmgr.fuse.session

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(rel: str) -> str:
    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
        return f.read()


def test_why_not_pyfuse3_where_rmgr_fuse_is_met() -> None:
    doc = rmgr.fuse.__doc__ or ""
    for needle in ("pyfuse3", "ioctl", "ENOTTY", "19.6k", "17.6k", "31k", "libfuse3",
                   "docs/fuse.md"):
        assert needle in doc, needle
    assert "pyfuse3" in (rmgr.fuse.session.__doc__ or "")
    fuse_md = _read("docs/fuse.md")
    for needle in ("pyfuse3", "ENOTTY", "17.6k", "19.6k", "~31k", "~20k"):
        assert needle in fuse_md, needle
    readme = _read("README.md")
    assert "pyfuse3" in readme and "docs/fuse.md" in readme


def test_sa_restart_is_documented_beside_the_socket_rules() -> None:
    text = _read("docs/sockets.md")
    section = text.split("### Signals and SA_RESTART", 1)[1].split("\n### ", 1)[0]
    for needle in ("SA_RESTART", "EINTR", "ERESTARTSYS", "retry", "poll"):
        assert needle in section, needle
