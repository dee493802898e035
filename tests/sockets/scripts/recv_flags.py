"""recv flags through the socket files, where signals and hostile values meet them.

usage: recv_flags.py SERVER_IP  (SOCK set; the kernel echo of kservers.py on port 7100)
Prints one JSON object with what happened."""

import errno
import fcntl
import json
import signal
import sys
import threading
import time

from rmgr import libsocket as socket
from rmgr.libsocket import abi

server = sys.argv[1]
out: dict[str, object] = {}
signal.signal(signal.SIGALRM, lambda *_: None)  # a handler: reads see EINTR


def later(delay: float, fn) -> None:  # type: ignore[no-untyped-def]
    threading.Timer(delay, fn).start()


with socket.create_connection((server, 7100)) as s:
    # unknown flags: refused by the library and by the stack's ioctl itself
    try:
        s.recv(10, 0x1)  # MSG_OOB
    except OSError as exc:
        out["lib_oob"] = errno.errorcode[exc.errno]
    try:
        fcntl.ioctl(s.fileno(), abi.IOP_RECVFLAGS, abi.INT.pack(0x1 | 0x8000))
    except OSError as exc:
        out["ioctl_unknown"] = errno.errorcode[exc.errno]

    # MSG_WAITALL broken by a signal after part arrived: the part, nothing lost
    s.sendall(b"12345")
    while s.nread() < 5:  # the echo is back before the read starts
        time.sleep(0.01)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    t0 = time.monotonic()
    part = s.recv(100, socket.MSG_WAITALL)
    out["waitall_interrupted"] = [part.decode(), round(time.monotonic() - t0, 1) >= 0.4]
    s.sendall(b"67890")
    out["after"] = s.recv(5, socket.MSG_WAITALL).decode()

    # MSG_PEEK blocked with nothing queued, broken by a signal (Python retries the
    # read): the retried read still peeks, so the next plain read gets the same bytes
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    later(0.8, lambda: s.sendall(b"peekaboo"))
    peeked = s.recv(100, socket.MSG_PEEK)
    time.sleep(0.2)
    out["peek_after_eintr"] = [peeked.decode(), s.recv(100).decode()]

    # MSG_WAITALL gathers many segments into one read
    later(0.2, lambda: [s.sendall(b"x" * 1000) or time.sleep(0.05) for _ in range(20)])
    out["waitall_gathers"] = len(s.recv(20_000, socket.MSG_WAITALL))
print(json.dumps(out))
