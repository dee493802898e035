"""A blocked recv and a blocked accept are interrupted by a signal (EINTR) and lose
nothing: usage eintr.py PEER_IP (prints one line per step)."""

import signal
import sys

from rmgr import libsocket as socket


class Interrupted(Exception):
    pass


def boom(signum, frame):  # type: ignore[no-untyped-def]
    raise Interrupted()


signal.signal(signal.SIGALRM, boom)
s = socket.create_connection((sys.argv[1], 7100))  # the kernel echo server
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    s.recv(100)
    print("recv returned", flush=True)
except Interrupted:
    print("recv interrupted", flush=True)
s.sendall(b"after")  # the echo comes back: nothing was lost or eaten
print("got", s.recv(100).decode(), flush=True)

srv = socket.socket()
srv.bind(("0.0.0.0", 7300))
srv.listen()
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    srv.accept()
    print("accept returned", flush=True)
except Interrupted:
    print("accept interrupted", flush=True)
print("listening", flush=True)
c, addr = srv.accept()  # the test connects now; the connection was not lost
print("accepted", addr[0], c.recv(100).decode(), flush=True)
