"""Which stack rmgr.libsocket talks to, and which file of its socket door makes a socket.

``SOCK`` selects the stack as on QNX (``SOCK=/alt`` → ``/alt/dev/socket``);
``setsockprefix()`` / ``clearsockprefix()`` override it for this process. A socket is
the file ``<family>/<type>/<proto>`` of the door: the stack serves one for every row of
its socket table, so this library needs no list of protocols of its own.
"""

from __future__ import annotations

import errno
import os

from . import abi

_prefix: str | None = None


def setsockprefix(prefix: str) -> None:
    """Use the stack at ``prefix`` (its files at ``prefix/dev/socket``) from now on."""
    global _prefix
    _prefix = prefix.rstrip("/")


def clearsockprefix() -> None:
    """Go back to ``$SOCK`` (or the default stack)."""
    global _prefix
    _prefix = None


def override() -> str | None:
    """The prefix set by ``setsockprefix`` (None: ``$SOCK`` rules)."""
    return _prefix


def restore(prefix: str | None) -> None:
    """Put back what ``override()`` returned."""
    global _prefix
    _prefix = prefix


def getsockprefix() -> str:
    if _prefix is not None:
        return _prefix
    return os.environ.get("SOCK", "").rstrip("/")


def socket_dir() -> str:
    return f"{getsockprefix()}/dev/socket"


def serves(family: int) -> bool:
    """Whether sockets of ``family`` (Linux numbering) go to the stack: AF_INET always
    (with no stack running that is an error, not the kernel's socket), another family
    the door has a number for when the running stack serves it (its directory exists);
    the rest are the kernel's."""
    door = abi.door_family(family)
    if door is None:
        return False
    return family == abi.AF_INET or os.path.isdir(f"{socket_dir()}/{door}")


def path_for(family: int, type_: int, proto: int) -> str:
    """The door's file for socket(family, type, proto) (``family`` in Linux numbering)."""
    return f"{socket_dir()}/{abi.door_family(family)}/{type_}/{proto}"


def open_error(family: int, type_: int) -> OSError:
    """What socket() says when the door has no file for it (the open found nothing):
    no stack at all, a type the family does not have (EINVAL, as the kernel for an
    unknown type), or a protocol the type does not have (EPROTONOSUPPORT)."""
    if not os.path.isdir(socket_dir()):
        return FileNotFoundError(errno.ENOENT, f"no io-pkt socket manager at {socket_dir()} "
                                               f"(set SOCK or setsockprefix())")
    if not os.path.isdir(f"{socket_dir()}/{abi.door_family(family)}/{type_}"):
        return OSError(errno.EINVAL, "Invalid argument")
    return OSError(errno.EPROTONOSUPPORT, "Protocol not supported")


# -- interfaces of the stack (scope ids of link-local addresses) -------------------------
def if_nameindex() -> list[tuple[int, str]]:
    """The stack's interfaces as (index, name), from ``config/interfaces`` (the kernel's
    are another host's: a scope id given to the stack is the stack's interface index)."""
    try:
        with open(f"{socket_dir()}/config/interfaces") as f:
            text = f.read()
    except OSError:
        return []
    out: list[tuple[int, str]] = []
    name = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            name = line[:-1]
        elif name is not None and line.split()[:1] == ["index"]:
            out.append((int(line.split()[1]), name))
            name = None
    return out


def if_nametoindex(name: str) -> int:
    for index, n in if_nameindex():
        if n == name:
            return index
    raise OSError(errno.ENXIO, "no interface with this name")


def if_indextoname(index: int) -> str:
    for i, n in if_nameindex():
        if i == index:
            return n
    raise OSError(errno.ENXIO, "no interface with this index")


def scope_id(zone: str) -> int:
    """A ``%zone`` of an IPv6 address text as a scope id: an interface name of the
    stack, or a number."""
    if zone.isdigit():
        return int(zone)
    return if_nametoindex(zone)
