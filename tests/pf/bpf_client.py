"""A bpf reader in its own process (tests must not hold a file of their own stack's
FUSE mount open while that stack's thread forks: the child's close would wait for a
FLUSH answer from the parent, which waits for the child's exec).

    python bpf_client.py PATH IFNAME [--filter FILE] [--bufsize N] [--inject HEX]
                                     [--blen-after N] [--read-size N]

Opens PATH (``clone``: attaches with BIOCSETIF IFNAME; an interface file, also
``IF,blen=...``: as is), sets the buffer size (BIOCSBLEN before attaching), the filter,
tries BIOCSBLEN again after attaching (``--blen-after``: the errno is reported), writes
the injected frame, prints ``ready``; on a line from stdin drains what is queued with
reads of ``--read-size`` bytes (default 128 KiB) and prints one JSON line: recv, drop
(BIOCGSTATS, taken when a drain after it finds nothing more, so that records + drop =
recv exactly when no filter is set), blen (BIOCGBLEN), blen_after, reads (the size of
each read), records (hex)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from stack.bpf import device as bd  # noqa: E402
from stack.bpf.vm import pack, parse_ddd  # noqa: E402


def main() -> None:
    args = sys.argv[1:]
    path, ifname = args[0], args[1]
    opts = dict(zip(args[2::2], args[3::2], strict=False))
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    if "--bufsize" in opts:
        granted = fcntl.ioctl(fd, bd.BIOCSBLEN, struct.pack("=I", int(opts["--bufsize"])))
        assert granted == struct.pack("=I", int(opts["--bufsize"])), granted
    if path.endswith("/clone"):
        fcntl.ioctl(fd, bd.BIOCSETIF, ifname.encode().ljust(16, b"\0"))
    got = fcntl.ioctl(fd, bd.BIOCGETIF, bytes(16)).rstrip(b"\0").decode()
    assert got == ifname, got
    blen_after = None
    if "--blen-after" in opts:
        try:
            fcntl.ioctl(fd, bd.BIOCSBLEN, struct.pack("=I", int(opts["--blen-after"])))
            blen_after = "ok"
        except OSError as exc:
            blen_after = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    (blen,) = struct.unpack("=I", fcntl.ioctl(fd, bd.BIOCGBLEN, bytes(4)))
    read_size = int(opts.get("--read-size", 1 << 17))
    if "--filter" in opts:
        with open(opts["--filter"]) as f:
            prog = parse_ddd(f.read())
        arg = bytearray((struct.pack("=I", len(prog)) + pack(prog)).ljust(4 + bd.SETF_MAXINSNS * 8, b"\0"))
        fcntl.ioctl(fd, bd.BIOCSETF, arg)
    if "--inject" in opts:
        frame = bytes.fromhex(opts["--inject"])
        assert os.write(fd, frame) == len(frame)
    print("ready", flush=True)
    sys.stdin.readline()
    data = b""
    reads: list[int] = []

    def drain() -> int:
        nonlocal data
        got = 0
        while True:
            try:
                b = os.read(fd, read_size)
            except BlockingIOError:
                return got
            if not b:
                return got
            reads.append(len(b))
            data += b
            got += len(b)

    drain()
    while True:  # stats that count exactly what was read (frames may still trickle in)
        recv, drop = struct.unpack("=II", fcntl.ioctl(fd, bd.BIOCGSTATS, bytes(8)))
        if not drain():
            break
    os.close(fd)
    recs = []
    assert data[:4] == struct.pack("<I", 0xA1B2C3D4), data[:24]
    pos = 24
    while pos + 16 <= len(data):
        _s, _u, cap, _l = struct.unpack_from("<IIII", data, pos)
        recs.append(data[pos + 16:pos + 16 + cap].hex())
        pos += 16 + cap
    print(json.dumps({"recv": recv, "drop": drop, "blen": blen, "blen_after": blen_after,
                      "reads": reads, "records": recs}), flush=True)


if __name__ == "__main__":
    main()
