"""How the stack's parts find each other: typed registries (gVisor's registration.go).

Nothing here knows a protocol. The stack owns one ``Registries`` object
(``stack.registries``) with four tables:

=================  ===============================  =========================================
table              key                              value
=================  ===============================  =========================================
``network``        EtherType (0x0800, 0x0806...)    ``fn(iface, pkt)``: layer 2 dispatches
``transports``     (family, IP protocol number)     a ``TransportProtocol``
``sockets``        (family, type, protocol)         a ``SocketType`` row (the socket doors)
``services``       a ``ServiceKey[T]``              a ``T`` (ipv4, pf, bpf, crypto, qnet...)
=================  ===============================  =========================================

Every ``register`` returns a ``Registration`` whose ``remove()`` undoes exactly that
registration; a module's context (stack/loader.py) keeps them and removes them when the
module unloads, so nothing a module registered outlives it.

Hot paths never look anything up here: a layer resolves what it needs once (at attach,
or when a registration changes) and keeps a direct reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:  # types only (no cycle: stack.network imports nothing of this module)
    from stack.addr import Addr
    from stack.network import IPInfo

T = TypeVar("T")

#: Address families, host numbering as on QNX/NetBSD (the socket door's directory names).
AF_INET = 2
AF_INET6 = 24


class Registration:
    """Undo handle of one registration; ``remove()`` is idempotent."""

    __slots__ = ("what", "_undo")

    def __init__(self, what: str, undo: Callable[[], None]) -> None:
        self.what = what
        self._undo: Callable[[], None] | None = undo

    @property
    def active(self) -> bool:
        return self._undo is not None

    def remove(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()

    def __repr__(self) -> str:
        return f"<Registration {self.what}{'' if self.active else ' (removed)'}>"


@dataclass(frozen=True)
class ServiceKey(Generic[T]):
    """A typed name: ``services.get(PF)`` is a ``Pf | None`` to the type checker.

    Keys live beside the component that provides the service (stack/services.py lists
    the well-known ones), so a consumer imports the key, not the provider."""

    name: str

    def __str__(self) -> str:
        return self.name


class Table(Generic[T]):
    """One registry table: unique keys, each registration undoable."""

    def __init__(self, kind: str, describe: Callable[[Any], str] = repr) -> None:
        self.kind = kind
        self._describe = describe
        self._items: dict[Any, T] = {}
        #: called with (key, value-or-None) after every change, for cached lookups
        self.watchers: list[Callable[[Any, T | None], None]] = []

    def register(self, key: Any, value: T) -> Registration:
        if key in self._items:
            raise ValueError(f"{self.kind} {self._describe(key)} is already registered")
        self._items[key] = value
        self._notify(key, value)

        return Registration(f"{self.kind} {self._describe(key)}",
                            lambda: self.unregister(key, value))

    def unregister(self, key: Any, value: T) -> None:
        """Remove ``key`` if it still maps to ``value`` (for owners without the handle)."""
        if self._items.get(key) is value:
            del self._items[key]
            self._notify(key, None)

    def _notify(self, key: Any, value: T | None) -> None:
        for fn in list(self.watchers):
            fn(key, value)

    def get(self, key: Any) -> T | None:
        return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(sorted(self._items, key=repr))

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[Any, T]]:
        return sorted(self._items.items(), key=lambda kv: repr(kv[0]))


class Services:
    """Named services: built-in layers and what modules provide (pf, bpf, crypto...)."""

    def __init__(self) -> None:
        self._table: Table[Any] = Table("service", str)

    @property
    def watchers(self) -> list[Callable[[Any, Any], None]]:
        return self._table.watchers

    def register(self, key: ServiceKey[T], value: T) -> Registration:
        return self._table.register(key, value)

    def get(self, key: ServiceKey[T]) -> T | None:
        return self._table.get(key)  # type: ignore[no-any-return]

    def require(self, key: ServiceKey[T]) -> T:
        value = self._table.get(key)
        if value is None:
            raise LookupError(f"{key} is not available in this stack")
        return value  # type: ignore[no-any-return]

    def names(self) -> list[str]:
        return [str(k) for k in self._table]

    def items(self) -> list[tuple[ServiceKey[Any], Any]]:
        return self._table.items()


# -- the interfaces a registered part implements ----------------------------------------
class TransportProtocol(Protocol):
    """What a network layer needs of a transport it demultiplexes to (an inetsw[] row):
    registered under (family, protocol number) in ``registries.transports``."""

    name: str

    def input(self, info: IPInfo) -> None:
        """A datagram for this host: ``info`` is the network layer's receive info
        (stack/network.py IPInfo: addresses, ``payload`` at the transport header)."""

    def icmp_error(self, icmp_type: int, code: int, src: Addr, dst: Addr, hdr: memoryview,
                   extra: int = 0) -> None:
        """An ICMP error quoting one of our datagrams (``hdr`` at its transport header)."""


class SocketEndpoint(Protocol):
    """What the socket doors hold: the transport's socket behind one open file (the doors
    require ``stack.sockets.endpoint.Endpoint``, which has this and the rest of the API)."""

    def close(self) -> None: ...


#: ``factory(proto)`` → a new endpoint of protocol ``proto``: the row's own, or for an
#: any-protocol row the one the caller asked for (1-255).
SocketFactory = Callable[[int], SocketEndpoint]

#: The readable name of a family's directory in the socket door (``inet/tcp``).
FAMILY_NAMES = {AF_INET: "inet", AF_INET6: "inet6"}


@dataclass(frozen=True)
class SocketType:
    """One row of the socket table (NetBSD's inetsw[]): what ``socket(family, type,
    proto)`` makes, and under which names the doors show it.

    The socket door serves ``<family>/<type>/<proto>`` for every row (and ``/0`` for a
    default row), plus ``<family name>/<name>`` and each alias (``inet/tcp``,
    ``inet/stream``; ``inet/raw/P`` for an any-protocol row); the text door serves
    ``<name>/`` (``tcp/clone``, ``tcp/N/...``)."""

    family: int
    type: int
    #: the protocol number, or ``SocketTypes.ANY`` (-1): every protocol 1-255 (raw)
    proto: int
    factory: SocketFactory
    #: what a socket of this row is called: ``tcp/N`` in the text door, ``inet/tcp``
    name: str
    #: the protocol a request for 0 means (the family's default for this type)
    default: bool = False
    #: raw-like rows need root (the door checks the caller; its files are mode 0600)
    privileged: bool = False
    #: more readable names under the family's directory: (name, protocol) —
    #: ``("stream", 6)``, or ``("icmp", 1)`` for one protocol of an any-protocol row
    aliases: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.default and self.proto <= 0:
            raise ValueError(f"socket type {self.family}/{self.type}: a default row needs "
                             "a protocol number")
        if not (self.proto == SocketTypes.ANY or 0 < self.proto < 256):
            raise ValueError(f"socket type {self.family}/{self.type}: protocol "
                             f"{self.proto} is not 1-255 or ANY")


class SocketTypes:
    """Sockets by (family, type, protocol), in one place for both doors (and so for
    libsocket, which opens the door's paths).

    ``proto`` 0 selects the row registered with ``default=True``; a row registered with
    ``ANY`` serves every protocol 1-255 of its (family, type) that has no row of its own.
    ``watchers`` are called after every change (the doors rebuild their trees)."""

    ANY = -1

    def __init__(self) -> None:
        self._table: Table[SocketType] = Table(
            "socket type", lambda k: "/".join(str(x) for x in k))
        #: (family, type) → its default row; rebuilt on every change (lookups are per open)
        self._defaults: dict[tuple[int, int], SocketType] = {}
        self._table.watchers.append(self._reindex)

    @property
    def watchers(self) -> list[Callable[[Any, SocketType | None], None]]:
        return self._table.watchers

    def register(self, row: SocketType) -> Registration:
        if row.default:
            other = self._defaults.get((row.family, row.type))
            if other is not None:
                raise ValueError(f"socket type {row.family}/{row.type} already has a "
                                 f"default protocol ({other.proto})")
        return self._table.register((row.family, row.type, row.proto), row)

    def _reindex(self, _key: object, _row: SocketType | None) -> None:
        self._defaults = {(r.family, r.type): r for r in self.rows() if r.default}

    def lookup(self, family: int, sock_type: int, proto: int) -> SocketType | None:
        if proto == 0:
            return self._defaults.get((family, sock_type))
        found = self._table.get((family, sock_type, proto))
        if found is None and 0 < proto < 256:
            found = self._table.get((family, sock_type, self.ANY))
        return found

    def rows(self) -> list[SocketType]:
        return [row for _, row in self._table.items()]

    def families(self) -> set[int]:
        return {row.family for row in self.rows()}


class Registries:
    """The stack's four tables (see the module docstring)."""

    def __init__(self) -> None:
        self.network: Table[Callable[..., None]] = Table("EtherType", lambda k: f"{k:#06x}")
        self.transports: Table[TransportProtocol] = Table(
            "transport", lambda k: f"family {k[0]} protocol {k[1]}")
        self.sockets = SocketTypes()
        self.services = Services()

    def render(self) -> str:
        """``config/protocols``: every registered part, one per line."""
        lines = [f"network {k:#06x} {_name(v)}" for k, v in self.network.items()]
        lines += [f"transport {f}/{p} {t.name}" for (f, p), t in self.transports.items()]
        lines += [f"socket {r.family}/{r.type}/{'*' if r.proto == SocketTypes.ANY else r.proto}"
                  f" {r.name}{' default' if r.default else ''}"
                  f"{' privileged' if r.privileged else ''}" for r in self.sockets.rows()]
        lines += [f"service {n}" for n in self.services.names()]
        return "\n".join(lines) + "\n"


def _name(fn: object) -> str:
    owner = getattr(fn, "__self__", None)
    return type(owner).__name__ + "." + getattr(fn, "__name__", "?") if owner is not None \
        else getattr(fn, "__qualname__", repr(fn))
