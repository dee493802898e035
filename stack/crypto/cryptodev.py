"""``<prefix>/dev/crypto``: NetBSD's cryptodev(4) over the crypto framework.

Each open is a cryptodev file descriptor with its own sessions (NetBSD no longer needs
CRIOGET's clone). The ioctls and their structs are NetBSD's (``CIOCGSESSION``,
``CIOCFSESSION``, ``CIOCCRYPT``) plus FreeBSD's ``CIOCCRYPTAEAD``; the numbers are
encoded with Linux's _IOWR/_IOW (the kernel's FUSE reads the size from them) and the
structs have Linux LP64 alignment: rmgr/include/io_pkt_crypto.h. The structs carry
pointers (key, src, dst, mac, iv, aad, tag) into the caller's memory: FUSE passes only
the struct, so the stack reads and writes the caller's buffers with process_vm_readv /
process_vm_writev (the caller is blocked in ioctl(2) meanwhile; the stack runs as root,
like a kernel's copyin/copyout). Access follows NetBSD's sysctls: ``kern.usercrypto``
(0: opening fails with ENXIO) and ``kern.cryptodevallowsoft`` (1: software sessions
allowed; 0 or -1: only an offload engine, else CIOCGSESSION fails with EINVAL).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import struct
from typing import TYPE_CHECKING

from rmgr.nodes import Handle, HandleFile, IoRequest, OpenRequest
from stack.crypto.algs import AEAD, Alg, info
from stack.crypto.framework import (
    DECRYPT,
    ENCRYPT,
    Crypto,
    CryptoError,
    CryptoRequest,
    Session,
    SessionParams,
)

if TYPE_CHECKING:  # types only
    from stack.sysctl import Sysctl


def _ioc(direction: int, group: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(group) << 8) | nr


_IOC_WRITE, _IOC_READ = 1, 2
#: struct session_op {u32 cipher, mac, comp_alg, keylen; void *key; int mackeylen;
#: void *mackey; u32 ses;}
SESSION_OP = struct.Struct("<IIIIQi4xQI4x")
#: struct crypt_op {u32 ses; u16 op, flags; u_int len; void *src, *dst, *mac, *iv;
#: u_int dst_len;}
CRYPT_OP = struct.Struct("<IHHI4xQQQQI4x")
#: struct crypt_aead {u32 ses; u16 op, flags; u_int len, aadlen, ivlen; const void *src;
#: void *dst; const void *aad; void *tag; const void *iv;}
CRYPT_AEAD = struct.Struct("<IHHIII4xQQQQQ")
CIOCGSESSION = _ioc(_IOC_READ | _IOC_WRITE, "c", 101, SESSION_OP.size)
CIOCFSESSION = _ioc(_IOC_WRITE, "c", 102, 4)
CIOCCRYPT = _ioc(_IOC_READ | _IOC_WRITE, "c", 103, CRYPT_OP.size)
CIOCCRYPTAEAD = _ioc(_IOC_READ | _IOC_WRITE, "c", 109, CRYPT_AEAD.size)
COP_ENCRYPT, COP_DECRYPT = 1, 2
#: the longest request one ioctl takes
MAX_LEN = 1 << 20
#: sessions one open may hold
MAX_SESSIONS = 256
#: the longest key accepted (an HMAC key may be long; NetBSD: HMAC_MAX_BLOCK_LEN)
MAX_KEY = 128


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_writev.restype = ctypes.c_ssize_t


def copyin(pid: int, addr: int, n: int) -> bytes:
    """``n`` bytes at ``addr`` in process ``pid`` (EFAULT when they are not there)."""
    if n == 0:
        return b""
    if pid <= 0 or addr == 0:
        raise OSError(errno.EFAULT, "bad address")
    buf = ctypes.create_string_buffer(n)
    local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), n)
    remote = _Iovec(addr, n)
    got = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if got != n:
        raise OSError(errno.EFAULT, f"cannot read {n} bytes at {addr:#x} of pid {pid}")
    return buf.raw


def copyout(pid: int, addr: int, data: bytes) -> None:
    n = len(data)
    if n == 0:
        return
    if pid <= 0 or addr == 0:
        raise OSError(errno.EFAULT, "bad address")
    buf = ctypes.create_string_buffer(bytes(data), n)
    local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), n)
    remote = _Iovec(addr, n)
    put = _libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if put != n:
        raise OSError(errno.EFAULT, f"cannot write {n} bytes at {addr:#x} of pid {pid}")


class CryptoDevHandle(Handle):
    """One open of /dev/crypto."""

    def __init__(self, crypto: Crypto, sysctl: Sysctl) -> None:
        super().__init__()
        self.crypto = crypto
        self.sysctl = sysctl
        self.sessions: dict[int, Session] = {}

    async def ioctl(self, cmd: int, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        c = self.crypto.counters
        try:
            if cmd == CIOCGSESSION:
                return 0, self._gsession(arg, req.caller.pid)
            if cmd == CIOCFSESSION:
                (ses,) = struct.unpack("<I", arg)
                s = self.sessions.pop(ses, None)
                if s is None:
                    raise OSError(errno.EINVAL, f"no session {ses}")
                self.crypto.free_session(s)
                return 0, b""
            if cmd == CIOCCRYPT:
                return 0, await self._crypt(arg, req.caller.pid)
            if cmd == CIOCCRYPTAEAD:
                return 0, await self._crypt_aead(arg, req.caller.pid)
        except OSError as exc:
            if exc.errno == errno.EFAULT:
                c["dev_bad_memory"] += 1
            c["dev_errors"] += 1
            raise
        raise OSError(errno.ENOTTY, f"unknown cryptodev ioctl {cmd:#x}")

    def _gsession(self, arg: bytes, pid: int) -> bytes:
        cipher, mac, comp, keylen, key, mackeylen, mackey, _ses = SESSION_OP.unpack(arg)
        if comp:
            raise OSError(errno.EINVAL, "compression is not supported")
        if keylen > MAX_KEY or mackeylen < 0 or mackeylen > MAX_KEY:
            raise OSError(errno.EINVAL, "key too long")
        if len(self.sessions) >= MAX_SESSIONS:
            raise OSError(errno.ENOSPC, "too many sessions on this descriptor")
        try:
            calg = Alg(cipher) if cipher else None
            malg = Alg(mac) if mac else None
        except ValueError:
            raise OSError(errno.EINVAL, f"unknown algorithm {cipher}/{mac}") from None
        params = SessionParams(cipher=calg, key=copyin(pid, key, keylen) if calg else b"",
                               auth=malg,
                               auth_key=copyin(pid, mackey, mackeylen) if malg else b"")
        allow_soft = int(self.sysctl.get("kern.cryptodevallowsoft")) > 0
        try:
            s = self.crypto.new_session(params, allow_soft=allow_soft)
        except CryptoError as exc:
            if not allow_soft:
                self.crypto.counters["dev_soft_refused"] += 1
            raise OSError(exc.errno or errno.EINVAL, exc.strerror or str(exc)) from None
        self.sessions[s.sid] = s
        self.crypto.counters["dev_sessions"] += 1
        return SESSION_OP.pack(cipher, mac, comp, keylen, key, mackeylen, mackey, s.sid)

    def _session(self, ses: int) -> Session:
        s = self.sessions.get(ses)
        if s is None or s.freed:
            raise OSError(errno.EINVAL, f"no session {ses}")
        return s

    @staticmethod
    def _op(op: int) -> int:
        if op == COP_ENCRYPT:
            return ENCRYPT
        if op == COP_DECRYPT:
            return DECRYPT
        raise OSError(errno.EINVAL, f"bad op {op}")

    async def _run(self, creq: CryptoRequest) -> CryptoRequest:
        await self.crypto.run(creq)
        self.crypto.counters["dev_ops"] += 1
        if creq.error:
            raise OSError(creq.error, "the operation failed" if creq.error != errno.EBADMSG
                          else "authentication failed")
        return creq

    async def _crypt(self, arg: bytes, pid: int) -> bytes:
        ses, op, flags, length, src, dst, mac, iv, dst_len = CRYPT_OP.unpack(arg)
        s = self._session(ses)
        p = s.params
        if length > MAX_LEN:
            raise OSError(errno.E2BIG, f"len {length} over {MAX_LEN}")
        data = copyin(pid, src, length)
        ivb = b""
        if p.cipher is not None and info(p.cipher).nonce_sizes:
            ivb = copyin(pid, iv, info(p.cipher).nonce_sizes[-1])
        direction = self._op(op)
        taglen = s.tag_size
        tag = b""
        if taglen and direction == DECRYPT and p.aead:
            tag = copyin(pid, mac, taglen)
        creq = await self._run(CryptoRequest(s, direction, data, tag=tag, iv=ivb,
                                             verify=p.aead))
        out = creq.out or bytearray()
        if p.cipher is not None:
            copyout(pid, dst, bytes(out))
        if taglen and mac and not (direction == DECRYPT and p.aead):
            copyout(pid, mac, creq.tag)
        return CRYPT_OP.pack(ses, op, flags, length, src, dst, mac, iv, len(out))

    async def _crypt_aead(self, arg: bytes, pid: int) -> bytes:
        ses, op, flags, length, aadlen, ivlen, src, dst, aad, tag, iv = CRYPT_AEAD.unpack(arg)
        s = self._session(ses)
        p = s.params
        if p.cipher is None or info(p.cipher).kind != AEAD:
            raise OSError(errno.EINVAL, "CIOCCRYPTAEAD needs an AEAD session")
        if length > MAX_LEN or aadlen > MAX_LEN or ivlen > 64:
            raise OSError(errno.E2BIG, "request too long")
        direction = self._op(op)
        data = copyin(pid, src, length)
        aadb = copyin(pid, aad, aadlen)
        ivb = copyin(pid, iv, ivlen)
        tagb = copyin(pid, tag, s.tag_size) if direction == DECRYPT else b""
        creq = await self._run(CryptoRequest(s, direction, data, aad=aadb, iv=ivb, tag=tagb))
        copyout(pid, dst, bytes(creq.out or b""))
        if direction == ENCRYPT:
            copyout(pid, tag, creq.tag)
        return arg

    def release(self) -> None:
        for s in self.sessions.values():
            self.crypto.free_session(s)
        self.sessions.clear()


def device_node(crypto: Crypto, sysctl: Sysctl) -> HandleFile:
    def open_dev(req: OpenRequest) -> CryptoDevHandle:
        crypto.counters["dev_opens"] += 1
        if int(sysctl.get("kern.usercrypto")) == 0:
            crypto.counters["dev_refused_usercrypto"] += 1
            raise OSError(errno.ENXIO, "kern.usercrypto is 0")
        return CryptoDevHandle(crypto, sysctl)

    return HandleFile(open_dev, mode=0o666)
