"""Find, validate, start and isolate modules.

Search order for a name: the bundled ``modules/`` folder, then each directory of
``IO_PKT_MODULE_PATH`` (colon-separated), then installed distributions' ``io_pkt.modules``
entry points. A spec containing ``/`` is a path to a module file: it must be an existing
regular file named ``devnp-NAME.py`` or ``lsm-NAME.py``. Whatever the way it was found, a
module file that anyone may write (or that sits in a directory anyone may write, without
the sticky bit) is refused before it is executed.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import stat
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.options import OptionError, Options
from stack.pfil import PFIL_ALL
from stack.registry import Registration, ServiceKey, SocketType, TransportProtocol

if TYPE_CHECKING:
    # cycle: the Stack owns the module manager and modules get the Stack, so each
    # names the other's type; neither imports the other at run time
    from rmgr.nodes import Directory
    from stack.core import Stack
    from stack.l2.iface import Interface

T = TypeVar("T")

log = logging.getLogger("io-pkt")

BUNDLED = Path(__file__).resolve().parent.parent / "modules"
ENTRY_POINT_GROUP = "io_pkt.modules"
_NAME = re.compile(r"^(devnp|lsm)-[a-z0-9][a-z0-9_.]*(-[a-z0-9_.]+)*$")


class LoadError(Exception):
    """A module could not be loaded or initialised; the message is the reason.
    ``module`` is the name the failure is reported under ("Unable to load/init NAME:
    reason"); ModuleManager.load sets it."""

    module = ""


def canonical_name(spec: str, kind: str) -> str:
    """``tap`` → ``devnp-tap`` for -d, ``qnet`` → ``lsm-qnet`` for -p; ``.so`` dropped."""
    name = spec[:-3] if spec.endswith(".so") else spec
    if name.startswith(("devnp-", "lsm-")):
        return name
    return ("devnp-" if kind == "driver" else "lsm-") + name


def validate_name(name: str) -> None:
    if not _NAME.match(name) or ".." in name:
        raise LoadError(f"bad module name {name!r} (expected devnp-NAME or lsm-NAME, "
                        "lower-case letters, digits, '_', '.', '-')")


def module_label(spec: str, kind: str) -> str:
    """The module a -d/-p spec names, for messages: ``devnp-tap`` for ``-d tap``,
    ``lsm-qnet`` for ``-p qnet``, ``devnp-foo`` for ``/opt/mods/devnp-foo.py``; a path that
    names no module file is shown as given."""
    if "/" in spec:
        base = os.path.basename(spec)
        stem = base[:-3] if base.endswith(".py") else ""
        return stem if stem and _NAME.match(stem) and ".." not in stem else spec
    return canonical_name(spec, kind)


def check_module_file(path: Path) -> str:
    """Refuse a module file that must not be run; returns the module's name (the stem).
    The name is checked first (no file system access for a bad one), then that the file
    exists and is a regular file, then that not every user can change it (a world-writable
    file, or a world-writable directory without the sticky bit)."""
    base = path.name
    if not base.endswith(".py"):
        raise LoadError("not a module file (expected a path to devnp-NAME.py or "
                        "lsm-NAME.py)")
    name = base[:-3]
    validate_name(name)
    try:
        real = path.resolve(strict=True)
        st = real.stat()
    except FileNotFoundError:
        raise LoadError(f"no such file {path}") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise LoadError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise LoadError(f"{path}: not a regular file")
    if st.st_mode & stat.S_IWOTH:
        raise LoadError(f"{path} is world-writable: refusing to run it (chmod o-w {path})")
    try:
        dst = real.parent.stat()
    except OSError as exc:
        raise LoadError(f"{real.parent}: {exc.strerror or exc}") from None
    if dst.st_mode & stat.S_IWOTH and not dst.st_mode & stat.S_ISVTX:
        raise LoadError(f"{path}: its directory {real.parent} is world-writable: "
                        "refusing to run a module from it")
    return name


def _load_file(path: Path) -> tuple[str, ModuleType]:
    """Check (check_module_file), then execute a module file: (name, module)."""
    name = check_module_file(path)
    modname = "io_pkt_module_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(modname, None)
        raise LoadError(f"{path}: {type(exc).__name__}: {exc}") from exc
    return name, module


def find_module(spec: str, kind: str) -> tuple[str, ModuleEntry, str]:
    """Resolve a -d/-p spec to (name, entry, where-from). Raises LoadError."""
    if "/" in spec:
        path = Path(spec)
        name, module = _load_file(path)
        where = str(path)
    else:
        name = canonical_name(spec, kind)
        validate_name(name)
        module = None
        dirs = [BUNDLED] + [Path(p) for p in os.environ.get("IO_PKT_MODULE_PATH", "").split(":") if p]
        for d in dirs:
            candidate = d / f"{name}.py"
            if candidate.is_file():
                _, module = _load_file(candidate)
                where = str(candidate)
                break
        if module is None:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name == name:
                    try:
                        module = ep.load()
                    except Exception as exc:
                        raise LoadError(f"entry point {ep.value}: {exc}") from exc
                    where = ep.value
                    break
        if module is None:
            raise LoadError("module not found (searched modules/, IO_PKT_MODULE_PATH, "
                            f"entry points {ENTRY_POINT_GROUP!r})")
    entry = getattr(module, "IO_PKT_MODULE", None)
    if not isinstance(entry, ModuleEntry):
        raise LoadError("no IO_PKT_MODULE entry (a stack.module_api.ModuleEntry)")
    if entry.api != MODULE_API_VERSION:
        raise LoadError(f"module API version {entry.api}, this stack has {MODULE_API_VERSION}")
    if entry.kind != kind:
        raise LoadError(f"is a {entry.kind} module, loaded as a {kind}")
    return name, entry, where


def first_leaf(exc: BaseException) -> BaseException:
    """trio wraps errors from nurseries in ExceptionGroups; report the first real one."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class ModuleInstance:
    """One loaded module: its cancel scope, interfaces and state."""

    def __init__(self, name: str, kind: str, opts: Options, where: str) -> None:
        self.name = name
        self.kind = kind
        self.opts = opts
        self.where = where
        self.state = "loading"
        self.error = ""
        self.scope = trio.CancelScope()
        self.interfaces: list[Interface] = []
        self.cleanups: list[Callable[[], Any]] = []
        #: what the module registered through its context (undone at unload)
        self.registrations: list[Registration] = []
        self.mounts: list[str] = []


class _Started:
    def __init__(self, status: trio.TaskStatus[None]) -> None:
        self.status = status
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.status.started()


class ModuleContext:
    """What a module's entry receives."""

    def __init__(self, stack: Stack, instance: ModuleInstance, nursery: trio.Nursery,
                 started: _Started) -> None:
        self.stack = stack
        self.instance = instance
        self.opts = instance.opts
        self.name = instance.name
        self.nursery = nursery
        self._started = started
        self.log = logging.getLogger(f"io-pkt.{instance.name}")

    def started(self) -> None:
        self._started()

    def add_cleanup(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` when the module unloads or fails (last added, first run)."""
        self.instance.cleanups.append(fn)

    def attach_interface(self, iface: Interface) -> Interface:
        return self.stack.attach_interface(iface, owner=self.instance)

    # -- registrations, each undone when the module unloads (last made, first undone) ----
    def track(self, reg: Registration) -> Registration:
        """Undo ``reg`` at unload (for a registration made some other way)."""
        self.instance.registrations.append(reg)
        self.add_cleanup(reg.remove)
        return reg

    def register_ethertype(self, ethertype: int, handler: Callable[..., None]) -> Registration:
        """Layer 2 hands this module every accepted frame of ``ethertype``:
        ``handler(iface, pkt)`` with ``pkt.l3`` at the payload."""
        return self.track(self.stack.l2.register(ethertype, handler))

    def register_transport(self, family: int, number: int,
                           proto: TransportProtocol) -> Registration:
        """A transport over a network layer (e.g. ESP as AF_INET protocol 50)."""
        return self.track(self.stack.registries.transports.register((family, number), proto))

    def register_socket(self, row: SocketType) -> Registration:
        """A socket type the doors can open (family, type, protocol)."""
        return self.track(self.stack.registries.sockets.register(row))

    def service(self, key: ServiceKey[T], value: T) -> Registration:
        """Offer ``value`` to the rest of the stack under ``key`` (``stack.services``)."""
        return self.track(self.stack.services.register(key, value))

    def create_pfil_head(self, head: str, *, events: bool = False) -> Registration:
        """A pfil head of this module's own, for others' hooks (pfil_head_create)."""
        return self.track(self.stack.pfil.create_head(head, events=events))

    def add_hook(self, fn: Callable[..., Any], head: str = "ether", dirs: int = PFIL_ALL,
                 *, priority: int = 0, name: str = "") -> Registration:
        """A pfil hook (stack/pfil.py), removed at unload."""
        pfil = self.stack.pfil
        hook = pfil.add_hook(fn, head, dirs, priority=priority, name=name or self.name)
        return self.track(Registration(f"pfil hook {hook.name} on {head}",
                                       lambda: pfil.remove_hook(hook)))

    def on_interface(self, fn: Callable[[str, Interface], None], *,
                     replay: bool = True) -> Registration:
        """``fn(event, iface)`` for attach / detach / change of every interface; with
        ``replay``, first ``fn("attach", iface)`` for each interface that exists now."""
        listeners = self.stack.iface_listeners
        listeners.append(fn)
        if replay:
            for iface in list(self.stack.interfaces.values()):
                fn("attach", iface)

        def undo() -> None:
            if fn in listeners:
                listeners.remove(fn)

        return self.track(Registration(f"interface listener {self.name}", undo))

    async def mount(self, root: Directory, mountpoint: str, **kw: Any) -> bool:
        """Serve ``root`` at ``mountpoint`` (QNX resmgr_attach) in this module's nursery,
        so unloading the module unmounts it. Returns once mounted; False (nothing
        mounted) when the stack runs without FUSE (``StackConfig.mount``)."""
        if not self.stack.config.mount:
            return False
        from rmgr.fuse.session import serve_mount

        kw.setdefault("counters", self.stack.fuse_counters)
        kw.setdefault("batch", self.stack.rx_batch)
        await self.nursery.start(functools.partial(serve_mount, root, mountpoint, **kw))
        self.instance.mounts.append(mountpoint)
        return True


class ModuleManager:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.loaded: list[ModuleInstance] = []

    async def load(self, spec: str, kind: str, opts: Options) -> ModuleInstance:
        """Load and start one module; raises LoadError with the reason."""
        c = self.stack.counters
        try:
            name, entry, where = find_module(spec, kind)
        except LoadError as exc:
            c["modules_failed_load"] += 1
            exc.module = module_label(spec, kind)
            raise
        inst = ModuleInstance(name, kind, opts, where)
        try:
            await self.stack.nursery.start(self._run, inst, entry)
        except (Exception, trio.Cancelled) as exc:
            c["modules_failed_load"] += 1
            if isinstance(exc, trio.Cancelled):
                raise
            leaf = first_leaf(exc)
            err = leaf if isinstance(leaf, LoadError) else \
                LoadError(f"{type(leaf).__name__}: {leaf}")
            err.module = name
            raise err from exc
        inst.state = "running"
        self.loaded.append(inst)
        opts.warn_unknown(name)
        c["modules_loaded"] += 1
        return inst

    async def _run(self, inst: ModuleInstance, entry: ModuleEntry,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = _Started(task_status)
        try:
            with inst.scope:
                async with trio.open_nursery() as nursery:
                    ctx = ModuleContext(self.stack, inst, nursery, started)
                    try:
                        await entry.entry(ctx)
                    except OptionError as exc:
                        raise LoadError(str(exc)) from exc
                    started()
                    await trio.sleep_forever()
        except Exception as exc:
            if not started.done:
                self._cleanup(inst)
                raise
            inst.state = "failed"
            leaf = first_leaf(exc)
            inst.error = f"{type(leaf).__name__}: {leaf}"
            self.stack.counters["modules_failed_run"] += 1
            log.error("module %s failed and was unloaded: %s", inst.name, inst.error,
                      exc_info=exc)
        else:
            if inst.state != "failed":
                inst.state = "unloaded"
        finally:
            self._cleanup(inst)
            if inst in self.loaded and inst.state in ("failed", "unloaded"):
                self.loaded.remove(inst)

    def _cleanup(self, inst: ModuleInstance) -> None:
        for iface in list(inst.interfaces):
            self.stack.detach_interface(iface.name, unload_owner=False)
        while inst.cleanups:
            fn = inst.cleanups.pop()
            try:
                fn()
            except Exception:
                log.exception("module %s: cleanup raised", inst.name)

    def unload(self, inst: ModuleInstance) -> None:
        inst.state = "unloaded"
        inst.scope.cancel()

    def render(self) -> str:
        lines = []
        for inst in self.loaded:
            ifs = ",".join(i.name for i in inst.interfaces) or "-"
            lines.append(f"{inst.name} {inst.kind} {inst.state} interfaces={ifs} "
                         f"options={inst.opts.word() or '-'} from={inst.where}\n")
        return "".join(lines)
