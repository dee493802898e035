"""Kernel-side servers for the socket tests (run inside the test's namespace).

usage: kservers.py HOST  - TCP echo on 7100, TCP accept-then-RST on 7101, UDP echo on 7102,
TCP "send hello then wait" on 7103, TCP close at once (FIN) on 7104,
TCP never accepted (the handshake completes, nothing is read or closed) on 7105. Prints
"ready" when listening."""

import socket
import struct
import sys
import threading

host = sys.argv[1]


def echo(c: socket.socket) -> None:
    with c:
        while True:
            try:
                d = c.recv(65536)
            except OSError:
                return
            if not d:
                return
            c.sendall(d)


def tcp(port: int, handler) -> None:  # type: ignore[no-untyped-def]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)

    def loop() -> None:
        while True:
            c, _ = s.accept()
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def rst(c: socket.socket) -> None:
    c.recv(100)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def hello(c: socket.socket) -> None:
    c.sendall(b"hello\n")
    try:
        while c.recv(100):
            pass
    except OSError:
        pass
    c.close()


def close_at_once(c: socket.socket) -> None:
    c.close()


tcp(7100, echo)
tcp(7101, rst)
tcp(7103, hello)
tcp(7104, close_at_once)
idle = socket.socket()  # listens, never accepts
idle.bind((host, 7105))
idle.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((host, 7102))
print("ready", flush=True)
while True:
    d, a = u.recvfrom(65536)
    u.sendto(d, a)
