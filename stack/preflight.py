"""Checks before mounting: a live stack already at this prefix, or a stale mount left by
a killed one (detected and cleaned, so the next start just works)."""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess

log = logging.getLogger("io-pkt")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_fuse_at(path: str) -> bool:
    target = os.path.abspath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                mnt = _unescape(fields[4])
                sep = fields.index("-")
                fstype = fields[sep + 1]
                if mnt == target and fstype.startswith("fuse"):
                    return True
    except OSError:
        pass
    return False


def check_mountpoint(path: str) -> str | None:
    """Return a reason not to start, or None. Cleans a stale mount at ``path``."""
    if not mounted_fuse_at(path):
        return None
    try:
        os.stat(path)
        os.listdir(path)
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO):
            log.warning("%s: stale mount of a stack that died; cleaning it", path)
            subprocess.run(["fusermount3", "-u", "-z", path], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if mounted_fuse_at(path):
                subprocess.run(["umount", "-l", path], check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return None if not mounted_fuse_at(path) else f"{path}: stale mount could not be removed"
        return f"{path}: {exc.strerror}"
    return f"a stack is already serving at {path} (use -i N with another prefix=)"
