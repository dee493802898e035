"""The FUSE kernel ABI: opcodes, flags and wire structs (``/usr/include/linux/fuse.h``, 7.38).

Only layouts and constants live here (smoltcp style: the wire format apart from the
session logic). Every struct is little-endian, as the kernel writes it on the machines we
run on; each is a precompiled ``struct.Struct`` so the hot path is one unpack_from call.
"""

from __future__ import annotations

import struct
from typing import Final

KERNEL_VERSION: Final = 7
KERNEL_MINOR_VERSION: Final = 38
ROOT_ID: Final = 1
MIN_READ_BUFFER: Final = 8192

# -- opcodes (enum fuse_opcode) ------------------------------------------------------------
LOOKUP: Final = 1
FORGET: Final = 2  # no reply
GETATTR: Final = 3
SETATTR: Final = 4
READLINK: Final = 5
SYMLINK: Final = 6
MKNOD: Final = 8
MKDIR: Final = 9
UNLINK: Final = 10
RMDIR: Final = 11
RENAME: Final = 12
LINK: Final = 13
OPEN: Final = 14
READ: Final = 15
WRITE: Final = 16
STATFS: Final = 17
RELEASE: Final = 18
FSYNC: Final = 20
SETXATTR: Final = 21
GETXATTR: Final = 22
LISTXATTR: Final = 23
REMOVEXATTR: Final = 24
FLUSH: Final = 25
INIT: Final = 26
OPENDIR: Final = 27
READDIR: Final = 28
RELEASEDIR: Final = 29
FSYNCDIR: Final = 30
GETLK: Final = 31
SETLK: Final = 32
SETLKW: Final = 33
ACCESS: Final = 34
CREATE: Final = 35
INTERRUPT: Final = 36  # no reply (except EAGAIN to requeue)
BMAP: Final = 37
DESTROY: Final = 38
IOCTL: Final = 39
POLL: Final = 40
NOTIFY_REPLY: Final = 41
BATCH_FORGET: Final = 42  # no reply
FALLOCATE: Final = 43
READDIRPLUS: Final = 44
RENAME2: Final = 45
LSEEK: Final = 46
COPY_FILE_RANGE: Final = 47
SETUPMAPPING: Final = 48
REMOVEMAPPING: Final = 49
SYNCFS: Final = 50
TMPFILE: Final = 51

OPCODE_NAMES: Final = {v: k for k, v in list(globals().items())
                       if k.isupper() and isinstance(v, int) and 1 <= v <= 51
                       and k not in ("KERNEL_VERSION", "KERNEL_MINOR_VERSION", "ROOT_ID")}

# -- notify codes (enum fuse_notify_code): sent with unique=0 and error=code ---------------
NOTIFY_POLL: Final = 1
NOTIFY_INVAL_INODE: Final = 2
NOTIFY_INVAL_ENTRY: Final = 3

# -- INIT flags ----------------------------------------------------------------------------
ASYNC_READ: Final = 1 << 0
POSIX_LOCKS: Final = 1 << 1
ATOMIC_O_TRUNC: Final = 1 << 3
BIG_WRITES: Final = 1 << 5
DONT_MASK: Final = 1 << 6
HAS_IOCTL_DIR: Final = 1 << 11
DO_READDIRPLUS: Final = 1 << 13
READDIRPLUS_AUTO: Final = 1 << 14
ASYNC_DIO: Final = 1 << 15
PARALLEL_DIROPS: Final = 1 << 18
MAX_PAGES: Final = 1 << 22
INIT_EXT: Final = 1 << 30

# -- open reply flags ------------------------------------------------------------------------
FOPEN_DIRECT_IO: Final = 1 << 0
FOPEN_KEEP_CACHE: Final = 1 << 1
FOPEN_NONSEEKABLE: Final = 1 << 2
FOPEN_CACHE_DIR: Final = 1 << 3
FOPEN_STREAM: Final = 1 << 4
FOPEN_NOFLUSH: Final = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES: Final = 1 << 6

# -- setattr valid bits ----------------------------------------------------------------------
FATTR_MODE: Final = 1 << 0
FATTR_UID: Final = 1 << 1
FATTR_GID: Final = 1 << 2
FATTR_SIZE: Final = 1 << 3

# -- ioctl / poll flags --------------------------------------------------------------------
IOCTL_COMPAT: Final = 1 << 0
IOCTL_UNRESTRICTED: Final = 1 << 1
IOCTL_RETRY: Final = 1 << 2
IOCTL_32BIT: Final = 1 << 3
IOCTL_DIR: Final = 1 << 4
POLL_SCHEDULE_NOTIFY: Final = 1 << 0

# -- _IOC encoding (asm-generic/ioctl.h; x86, arm, riscv) -----------------------------------
IOC_NRBITS: Final = 8
IOC_TYPEBITS: Final = 8
IOC_SIZEBITS: Final = 14
IOC_NRSHIFT: Final = 0
IOC_TYPESHIFT: Final = IOC_NRSHIFT + IOC_NRBITS
IOC_SIZESHIFT: Final = IOC_TYPESHIFT + IOC_TYPEBITS
IOC_DIRSHIFT: Final = IOC_SIZESHIFT + IOC_SIZEBITS
IOC_NONE: Final = 0
IOC_WRITE: Final = 1
IOC_READ: Final = 2


def IOC(direction: int, typ: int, nr: int, size: int) -> int:  # noqa: N802 - kernel macro names
    return ((direction << IOC_DIRSHIFT) | (typ << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT)
            | (size << IOC_SIZESHIFT))


def IO(typ: int, nr: int) -> int:  # noqa: N802
    return IOC(IOC_NONE, typ, nr, 0)


def IOR(typ: int, nr: int, size: int) -> int:  # noqa: N802
    return IOC(IOC_READ, typ, nr, size)


def IOW(typ: int, nr: int, size: int) -> int:  # noqa: N802
    return IOC(IOC_WRITE, typ, nr, size)


def IOWR(typ: int, nr: int, size: int) -> int:  # noqa: N802
    return IOC(IOC_READ | IOC_WRITE, typ, nr, size)


def ioc_dir(cmd: int) -> int:
    return (cmd >> IOC_DIRSHIFT) & 0x3


def ioc_size(cmd: int) -> int:
    return (cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)


# -- wire structs ----------------------------------------------------------------------------
# struct fuse_in_header { u32 len, opcode; u64 unique, nodeid; u32 uid, gid, pid;
#                         u16 total_extlen, padding; }
IN_HEADER: Final = struct.Struct("<IIQQIIIHH")
# struct fuse_out_header { u32 len; s32 error; u64 unique; }
OUT_HEADER: Final = struct.Struct("<IiQ")

INIT_IN: Final = struct.Struct("<IIII")  # major, minor, max_readahead, flags
INIT_IN_FLAGS2: Final = struct.Struct("<I")  # flags2 (offset 16, when FUSE_INIT_EXT)
# struct fuse_init_out (64 bytes): major, minor, max_readahead, flags, max_background,
# congestion_threshold, max_write, time_gran, max_pages, map_alignment, flags2, unused[7]
INIT_OUT: Final = struct.Struct("<IIIIHHIIHHI28x")

# struct fuse_attr (88 bytes)
ATTR: Final = struct.Struct("<QQQQQQIIIIIIIIII")
# struct fuse_entry_out: nodeid, generation, entry_valid, attr_valid, entry_valid_nsec,
# attr_valid_nsec, then fuse_attr
ENTRY_OUT: Final = struct.Struct("<QQQQII" + ATTR.format[1:])
# struct fuse_attr_out: attr_valid, attr_valid_nsec, dummy, then fuse_attr
ATTR_OUT: Final = struct.Struct("<QII" + ATTR.format[1:])

FORGET_IN: Final = struct.Struct("<Q")  # nlookup
BATCH_FORGET_IN: Final = struct.Struct("<II")  # count, dummy
FORGET_ONE: Final = struct.Struct("<QQ")  # nodeid, nlookup
GETATTR_IN: Final = struct.Struct("<IIQ")  # getattr_flags, dummy, fh
# struct fuse_setattr_in: valid, padding, fh, size, lock_owner, atime, mtime, ctime,
# atimensec, mtimensec, ctimensec, mode, unused4, uid, gid, unused5
SETATTR_IN: Final = struct.Struct("<IIQQQQQQIIIIIIII")
OPEN_IN: Final = struct.Struct("<II")  # flags, open_flags
OPEN_OUT: Final = struct.Struct("<QII")  # fh, open_flags, padding
RELEASE_IN: Final = struct.Struct("<QIIQ")  # fh, flags, release_flags, lock_owner
FLUSH_IN: Final = struct.Struct("<QIIQ")  # fh, unused, padding, lock_owner
# struct fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding
READ_IN: Final = struct.Struct("<QQIIQII")
# struct fuse_write_in: fh, offset, size, write_flags, lock_owner, flags, padding
WRITE_IN: Final = struct.Struct("<QQIIQII")
WRITE_OUT: Final = struct.Struct("<II")  # size, padding
# struct fuse_kstatfs: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize,
# padding, spare[6]
STATFS_OUT: Final = struct.Struct("<QQQQQIIII24x")
ACCESS_IN: Final = struct.Struct("<II")  # mask, padding
INTERRUPT_IN: Final = struct.Struct("<Q")  # unique
# struct fuse_ioctl_in: fh, flags, cmd, arg, in_size, out_size
IOCTL_IN: Final = struct.Struct("<QIIQII")
IOCTL_OUT: Final = struct.Struct("<iIII")  # result, flags, in_iovs, out_iovs
POLL_IN: Final = struct.Struct("<QQII")  # fh, kh, flags, events
POLL_OUT: Final = struct.Struct("<II")  # revents, padding
NOTIFY_POLL_WAKEUP_OUT: Final = struct.Struct("<Q")  # kh
NOTIFY_INVAL_ENTRY_OUT: Final = struct.Struct("<QII")  # parent, namelen, flags; name + NUL
# struct fuse_dirent header: ino, off, namelen, type (then name, padded to 8)
DIRENT: Final = struct.Struct("<QQII")

# FUSE_COMPAT_WRITE_IN_SIZE: kernels before 7.9 sent a 24-byte fuse_write_in
COMPAT_WRITE_IN_SIZE: Final = 24


def dirent_size(namelen: int) -> int:
    """FUSE_DIRENT_SIZE: the record padded to a 64-bit boundary."""
    return (DIRENT.size + namelen + 7) & ~7


def direntplus_size(namelen: int) -> int:
    return (ENTRY_OUT.size + DIRENT.size + namelen + 7) & ~7


assert IN_HEADER.size == 40
assert OUT_HEADER.size == 16
assert INIT_OUT.size == 64
assert ATTR.size == 88
assert ENTRY_OUT.size == 128
assert ATTR_OUT.size == 104
assert SETATTR_IN.size == 88
assert READ_IN.size == 40 and WRITE_IN.size == 40
assert STATFS_OUT.size == 80
assert IOCTL_IN.size == 32 and IOCTL_OUT.size == 16
assert POLL_IN.size == 24
