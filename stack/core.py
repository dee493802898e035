"""The Stack: one trio run holding layer 2, the protocols, the modules and the mounts.

Ownership (structured concurrency): ``Stack.run`` opens the stack's nursery. Every module
runs in a child task of it under its own cancel scope (see loader.py), every interface's
background tasks run in its owner module's nursery, and each FUSE mount is served by a
task of the stack nursery. Shutdown cancels in order: modules (drivers remove their
devices), then mounts, then the rest.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from rmgr.fuse.counters import FUSE_COUNTERS
from rmgr.nodes import Caller, ControlFile, Directory, Node, TextFile
from stack.batch import RxBatch
from stack.counters import Counters, names
from stack.l2.ether import Layer2
from stack.l2.iface import Interface
from stack.l2.loopback import Loopback
from stack.loader import LoadError, ModuleInstance, ModuleManager
from stack.options import Options
from stack.pfil import Pfil
from stack.registry import Registries
from stack.services import BPF, CONTROL, CRYPTO, IPV4, IPV6, PF, SOCKETS, TRANSPORTS
from stack.sysctl import Sysctl

if TYPE_CHECKING:
    # types only (the properties below): these layers hold a Stack and import this
    # module for its type, so run-time imports here would be cycles
    from stack.bpf.device import BpfDevice
    from stack.control import Control
    from stack.crypto.framework import Crypto
    from stack.inet.ipv4 import IPv4Layer
    from stack.inet6.ipv6 import IPv6Layer
    from stack.pf.engine import Pf
    from stack.sockets.conn import SocketTable as OpenSockets
    from stack.transport import RawProto, TCPProto, Transports, UDPProto

log = logging.getLogger("io-pkt")

#: Components of the built-in IP stack attach themselves here at start (IPv4, transports,
#: the socket files, ...): each is ``fn(stack)`` and may start tasks in stack.nursery.
BuiltinAttach = Callable[["Stack"], "Awaitable[None] | None"]

#: The built-in parts of the stack, in attach order: each package's ``attach(stack)``
#: registers its protocols, sockets and services in ``stack.registries``. What the
#: running stack speaks is listed in ``config/protocols``.
BUILTIN_COMPONENTS = ("stack.inet", "stack.inet6", "stack.transport", "stack.sockets", "stack.control",
                      "stack.dns", "stack.dhcp", "stack.crypto", "stack.ipsec")


@dataclass
class StackConfig:
    instance: int = 0
    prefix: str = ""
    verbose: int = 0
    tcpip: Options = field(default_factory=Options)
    drivers: list[tuple[str, Options]] = field(default_factory=list)
    protocols: list[tuple[str, Options]] = field(default_factory=list)
    mount: bool = True  # tests of the core may run without FUSE

    @property
    def socket_path(self) -> str:
        return f"{self.prefix}/dev/socket"


#: the ``stack`` group's names (stack/counters.py): interfaces (here) and modules
#: (stack/loader.py)
STACK_COUNTERS: frozenset[str] = names("""
    if_attached if_detached iface_listener_errors
    modules_loaded modules_failed_load modules_failed_run
""")


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.counters = Counters("stack", STACK_COUNTERS)
        #: shared by every mount this stack serves (config/stats/fuse)
        self.fuse_counters = Counters("fuse", FUSE_COUNTERS)
        self.sysctl = Sysctl()
        #: how the parts find each other (stack/registry.py): EtherTypes, transports,
        #: socket types and named services
        self.registries = Registries()
        self.services = self.registries.services
        self.interfaces: dict[str, Interface] = {}
        self._next_index = 1
        # (layer 2) listeners and pfil exist before Layer2, which registers with both
        self.iface_listeners: list[Callable[[str, Interface], None]] = []
        #: called first at shutdown (synchronous; what they send goes out before the
        #: drivers unload)
        self.shutdown_hooks: list[Callable[[], None]] = []
        #: drivers bracket each receive batch; protocols defer work to its end (batch.py)
        self.rx_batch = RxBatch()
        self.pfil = Pfil(self)
        self.l2 = Layer2(self)
        self.modules = ModuleManager(self)
        self.nursery: trio.Nursery = None  # type: ignore[assignment]  # set by run()
        # the tree served at <prefix>/dev/socket
        self.tree = Directory()
        self.config_dir = Directory()
        self.tree.add("config", self.config_dir)
        self.ready = trio.Event()
        self._mount_scopes: list[trio.CancelScope] = []
        self.lo0 = Loopback()
        self._publish_core_files()

    # -- the built-in layers and well-known services, typed ---------------------------------
    @property
    def inet(self) -> IPv4Layer:
        return self.services.require(IPV4)

    @property
    def inet6(self) -> IPv6Layer:
        return self.services.require(IPV6)

    @property
    def transports(self) -> Transports:
        return self.services.require(TRANSPORTS)

    @property
    def tcp(self) -> TCPProto:
        return self.transports.tcp

    @property
    def udp(self) -> UDPProto:
        return self.transports.udp

    @property
    def raw(self) -> RawProto:
        return self.transports.raw

    @property
    def sockets(self) -> OpenSockets:
        return self.services.require(SOCKETS)

    @property
    def control(self) -> Control:
        return self.services.require(CONTROL)

    @property
    def pf(self) -> Pf | None:
        return self.services.get(PF)

    @property
    def bpf(self) -> BpfDevice | None:
        return self.services.get(BPF)

    @property
    def crypto(self) -> Crypto:
        return self.services.require(CRYPTO)

    # -- interfaces ------------------------------------------------------------------
    def attach_interface(self, iface: Interface, owner: ModuleInstance | None = None) -> Interface:
        if iface.name in self.interfaces:
            raise OSError(errno.EEXIST, f"interface {iface.name} already exists")
        iface.stack = self
        iface.owner = owner
        iface.index = self._next_index
        self._next_index += 1
        self.interfaces[iface.name] = iface
        if owner is not None:
            owner.interfaces.append(iface)
        self.counters["if_attached"] += 1
        self._announce("attach", iface)
        return iface

    def detach_interface(self, name: str, *, unload_owner: bool = True) -> None:
        iface = self.interfaces.get(name)
        if iface is None:
            raise OSError(errno.ENXIO, f"no interface {name}")
        if iface is self.lo0:
            raise OSError(errno.EPERM, "lo0 cannot be destroyed")
        self._announce("detach", iface)
        del self.interfaces[name]
        try:
            iface.destroy()
        except Exception:
            log.exception("%s: driver destroy raised", name)
        owner = iface.owner
        if owner is not None and iface in owner.interfaces:
            owner.interfaces.remove(iface)
            if unload_owner and not owner.interfaces and owner.kind == "driver":
                self.modules.unload(owner)
        self.counters["if_detached"] += 1

    def interface_changed(self, iface: Interface) -> None:
        self._announce("change", iface)

    def _announce(self, event: str, iface: Interface) -> None:
        """Tell listeners (pfil attach/detach hooks, routing, fast-forward cache)."""
        for fn in list(self.iface_listeners):
            try:
                fn(event, iface)
            except Exception:
                self.counters["iface_listener_errors"] += 1
                log.exception("interface listener raised on %s %s", event, iface.name)

    def unique_name(self, base: str) -> str:
        """``tap`` → the first free of tap0, tap1, ..."""
        n = 0
        while f"{base}{n}" in self.interfaces:
            n += 1
        return f"{base}{n}"

    # -- files -----------------------------------------------------------------------
    def _publish_core_files(self) -> None:
        cfg = self.config_dir
        cfg.add("status", TextFile(self._render_status))
        cfg.add("sysctl", ControlFile(self._sysctl_command, self.sysctl.render))
        cfg.add("modules", ControlFile(self._modules_command, self.modules.render))
        cfg.add("protocols", TextFile(self.registries.render))

    def _render_status(self) -> str:
        c = self.config
        lines = [f"pid {os.getpid()}", f"instance {c.instance}", f"prefix {c.prefix}",
                 f"interfaces {' '.join(self.interfaces)}"]
        lines += [f"counter {k} {v}" for k, v in self.counters.snapshot().items()]
        return "\n".join(lines) + "\n"

    def _sysctl_command(self, text: str, caller: Caller) -> str:
        if not caller.is_root:
            raise OSError(errno.EPERM, "changing a sysctl needs root")
        name, sep, value = text.partition("=")
        if not sep:
            raise OSError(errno.EINVAL, f"expected name=value, got {text!r}")
        new = self.sysctl.set(name.strip(), value.strip())
        return f"{name.strip()}={new}\n"

    async def _modules_command(self, text: str, caller: Caller) -> str:
        """``load -d tap name=tap1`` / ``load -p pf`` / ``load devnp-tap OPTS`` /
        ``unload NAME``."""
        if not caller.is_root:
            raise OSError(errno.EPERM, "loading a module needs root")
        words = text.split()
        if not words:
            raise OSError(errno.EINVAL, "empty command; expected load or unload")
        verb, args = words[0], words[1:]
        if verb == "load":
            kind = None
            if args and args[0] in ("-d", "-p"):
                kind = "driver" if args[0] == "-d" else "protocol"
                args = args[1:]
            if not args or len(args) > 2:
                raise OSError(errno.EINVAL, "usage: load [-d|-p] MODULE [OPTIONS]")
            spec = args[0]
            if kind is None:
                base = os.path.basename(spec)
                kind = "driver" if base.startswith("devnp-") else "protocol" \
                    if base.startswith("lsm-") else ""
                if not kind:
                    raise OSError(errno.EINVAL, f"{spec}: say -d or -p, or use a devnp-/lsm- name")
            try:
                opts = Options.parse(args[1] if len(args) > 1 else "")
                inst = await self.modules.load(spec, kind, opts)
            except (LoadError, ValueError) as exc:
                log.error("Unable to load/init %s: %s", spec, exc)
                raise OSError(errno.ENOENT if "not found" in str(exc) else errno.EINVAL,
                              f"Unable to load/init {spec}: {exc}") from None
            ifs = " ".join(i.name for i in inst.interfaces)
            return f"loaded {inst.name}{' ' + ifs if ifs else ''}\n"
        if verb == "unload" and len(args) == 1:
            for inst in self.modules.loaded:
                if inst.name == args[0]:
                    self.modules.unload(inst)
                    return f"unloaded {inst.name}\n"
            raise OSError(errno.ENOENT, f"module {args[0]} is not loaded")
        raise OSError(errno.EINVAL, f"unknown command {verb!r}; expected load or unload")

    # -- lifecycle -------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[Stack] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.attach_interface(self.lo0)
            nursery.start_soon(self.lo0.run)
            for attach in builtin_components():
                result = attach(self)
                if result is not None:
                    await result
            for spec, opts in self.config.drivers:
                await self._load_logged(spec, "driver", opts)
            for spec, opts in self.config.protocols:
                await self._load_logged(spec, "protocol", opts)
            if self.config.mount:
                # allow_other only on request: then users other than the stack's own
                # may open the files (the mode bits and root checks still apply)
                await self.attach_mount(self.tree, self.config.socket_path,
                                        fsname=f"io-pkt{self.config.instance}",
                                        allow_other=self.config.tcpip.flag("allow_other"))
            self.ready.set()
            log.info("io-pkt instance %d ready at %s", self.config.instance,
                     self.config.socket_path)
            task_status.started(self)
            await trio.sleep_forever()

    async def _load_logged(self, spec: str, kind: str, opts: Options) -> None:
        try:
            await self.modules.load(spec, kind, opts)
        except LoadError as exc:
            # io-pkt's own wording, with the module's name: the stack goes on without it
            log.error("Unable to load/init %s: %s", exc.module or spec, exc)

    async def attach_mount(self, root: Node, mountpoint: str, **kw: Any) -> None:
        """Serve ``root`` at ``mountpoint`` (QNX resmgr_attach); returns once mounted.
        A root that is not a Directory is mounted on a file (``<prefix>/dev/crypto``)."""
        from rmgr.fuse.session import serve_mount

        scope = trio.CancelScope()
        self._mount_scopes.append(scope)

        async def serve(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                kw.setdefault("counters", self.fuse_counters)
                kw.setdefault("batch", self.rx_batch)
                await serve_mount(root, mountpoint, task_status=task_status, **kw)

        await self.nursery.start(serve)

    async def shutdown(self) -> None:
        """Orderly stop: the protocols' last words (``shutdown_hooks``: IPv6's final
        router advertisement), modules (drivers remove devices), then mounts, then
        everything."""
        for hook in list(self.shutdown_hooks):
            try:
                hook()
            except Exception:
                log.exception("a shutdown hook failed")
        if self.shutdown_hooks:
            await trio.sleep(0.05)  # let the drivers write what the hooks sent
        for inst in reversed(list(self.modules.loaded)):
            self.modules.unload(inst)
        await trio.sleep(0)
        for _ in range(50):
            if not self.modules.loaded:
                break
            await trio.sleep(0.01)
        for scope in reversed(self._mount_scopes):
            scope.cancel()
        self.nursery.cancel_scope.cancel()


def builtin_components() -> list[BuiltinAttach]:
    """The built-in IP stack's parts, in attach order. Each import is local so a layer
    under construction cannot stop the core from starting."""
    parts: list[BuiltinAttach] = []
    import importlib

    for modname in BUILTIN_COMPONENTS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue
            raise
        attach = getattr(mod, "attach", None)
        if attach is not None:
            parts.append(attach)
    return parts


async def serve_until_signalled(stack: Stack,
                                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the stack; SIGINT/SIGTERM trigger the orderly shutdown."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(stack.run)
            task_status.started()
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                await stack.shutdown()
                nursery.cancel_scope.cancel()
                break
