"""A kernel TCP peer that does not read until told to: usage sink.py IP PORT.

Prints "ready"; for each connection accepted, waits for a line on stdin, then reads to
EOF and prints "LEN ok|bad eof|reset": ok when the bytes are the stream of big-endian
32-bit counters 0, 1, 2, ... cut at LEN (what the writers send), so a lost or repeated
byte shows."""

import socket
import sys
from array import array


def pattern(n: int) -> bytes:
    a = array("I", range(n // 4 + 1))
    if sys.byteorder == "little":
        a.byteswap()
    return a.tobytes()[:n]


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    if not sys.stdin.readline():
        break
    got = bytearray()
    end = "eof"
    try:
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            got += b
    except ConnectionResetError:
        end = "reset"
    c.close()
    ok = "ok" if got == pattern(len(got)) else "bad"
    print(len(got), ok, end, flush=True)
