"""The C header and rmgr.libsocket.abi agree on every command number and struct size."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rmgr.libsocket import abi
from tests.conftest import REPO

STRUCTS = {"iop_sockaddr": abi.SOCKADDR.size, "iop_accept": abi.ACCEPT.size,
           "iop_sockopt": abi.SOCKOPT.size, "iop_sockinfo": abi.SOCKINFO.size,
           "iop_recvinfo": abi.RECVINFO.size, "iop_msg": abi.MSG.size}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_header_matches_python(tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "io_pkt_socket.h"',
             "int main(void) {"]
    for name in abi.COMMANDS:
        lines.append(f'printf("{name} %lu\\n", (unsigned long){name});')
    for name in STRUCTS:
        lines.append(f'printf("{name} %zu\\n", sizeof(struct {name}));')
    for name in ("IOP_F_NONBLOCK", "IOP_F_HANDOVER"):
        lines.append(f'printf("{name} %d\\n", {name});')
    for name in ("IOP_MSG_ALIGN", "IOP_MSG_TRUNC", "IOP_MSG_MAXCOUNT"):
        lines.append(f'printf("{name} %d\\n", {name});')
    lines.append('printf("msg_addr_off %zu\\n", offsetof(struct iop_msg, addr));')
    lines.append('printf("name_off %zu\\n", offsetof(struct iop_accept, name));')
    lines.append("return 0; }")
    src = tmp_path / "abi.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "abi"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", f"{REPO}/rmgr/include", "-o", str(exe),
                    str(src)], check=True, capture_output=True)
    out = dict(line.split() for line in subprocess.run([str(exe)], check=True,
                                                       capture_output=True,
                                                       text=True).stdout.splitlines())
    for name, value in abi.COMMANDS.items():
        assert int(out[name]) == value, name
        assert abi.ioc_size(value) > 0 and abi.ioc_dir(value) in (1, 2, 3), name
    for name, size in STRUCTS.items():
        assert int(out[name]) == size, name
    assert int(out["IOP_F_NONBLOCK"]) == abi.IOP_F_NONBLOCK
    assert int(out["IOP_F_HANDOVER"]) == abi.IOP_F_HANDOVER
    assert int(out["name_off"]) == 40
    for name in ("IOP_MSG_ALIGN", "IOP_MSG_TRUNC", "IOP_MSG_MAXCOUNT"):
        assert int(out[name]) == getattr(abi, name), name
    assert int(out["msg_addr_off"]) == 16 and abi.MSG.size % abi.IOP_MSG_ALIGN == 0


def test_sockaddr_round_trip() -> None:
    raw = abi.pack_sockaddr_in("10.1.2.3", 8080, abi.IOP_F_NONBLOCK)
    assert len(raw) == abi.SOCKADDR.size
    assert abi.unpack_sockaddr_in(raw) == ("10.1.2.3", 8080)
    info = abi.SockInfo(2, 1, 6, 7, abi.ST_CONNECTED, 0, 5, "tcp/7")
    assert abi.SockInfo.unpack(info.pack()) == info


def test_getaddrinfo_numeric_and_hosts() -> None:
    import socket

    from rmgr import libsocket

    r = libsocket.getaddrinfo("10.0.0.1", 80, type=socket.SOCK_STREAM)
    assert r == [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80))]
    assert libsocket.getaddrinfo(None, "80", flags=socket.AI_PASSIVE,
                                 type=socket.SOCK_STREAM)[0][4] == ("0.0.0.0", 80)
    assert libsocket.gethostbyname("localhost") == "127.0.0.1"
    with pytest.raises(socket.gaierror):
        libsocket.getaddrinfo("no-such-host.invalid", 80)
    with pytest.raises(socket.gaierror):
        libsocket.getaddrinfo("::1", 80, socket.AF_INET6)
    assert len(libsocket.getaddrinfo("127.0.0.1", 0)) == 3  # stream, dgram, raw like glibc


def test_patch_swaps_and_restores() -> None:
    import asyncio  # noqa: F401 - imported before the patch, as in real programs
    import socket

    from rmgr import libsocket

    real = socket.socket
    with libsocket.patch("/nonexistent"):
        assert socket.socket is libsocket.socket
        a, b = socket.socketpair()  # AF_UNIX stays the kernel's
        assert isinstance(a, socket.socket)
        a.close()
        b.close()
        with pytest.raises(FileNotFoundError):
            socket.socket()
    assert socket.socket is real
