"""A selectors-based non-blocking echo server (plain stdlib code):
python selectors_echo.py HOST PORT"""

import selectors
import socket
import sys

sel = selectors.DefaultSelector()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(64)
srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
print("serving", type(sel).__name__, flush=True)
pending: dict[socket.socket, bytes] = {}
closing: set[socket.socket] = set()  # peer sent EOF; close once pending is out
while True:
    for key, mask in sel.select():
        sock = key.fileobj
        if sock is srv:
            conn, _ = srv.accept()
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
            continue
        if mask & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:  # EOF: echo what is still pending, then close
                if sock in pending:
                    closing.add(sock)
                    sel.modify(sock, selectors.EVENT_WRITE)
                else:
                    sel.unregister(sock)
                    sock.close()
                continue
            pending[sock] = pending.get(sock, b"") + data
            sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        if mask & selectors.EVENT_WRITE and sock in pending:
            try:
                n = sock.send(pending[sock])
            except BlockingIOError:
                continue
            pending[sock] = pending[sock][n:]
            if not pending[sock]:
                del pending[sock]
                if sock in closing:
                    closing.discard(sock)
                    sel.unregister(sock)
                    sock.close()
                else:
                    sel.modify(sock, selectors.EVENT_READ)
