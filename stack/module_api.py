"""What a loadable module declares and receives (QNX: iopkt_drvr_entry / iopkt_lsm_entry).

A module file (``modules/devnp-foo.py``, ``modules/lsm-bar.py``, a path, or an installed
package's ``io_pkt.modules`` entry point) defines::

    IO_PKT_MODULE = ModuleEntry(kind="driver", api=MODULE_API_VERSION, entry=main,
                                description="what it is")

    async def main(ctx: ModuleContext) -> None:
        ...set up, raising on bad options...
        ctx.started()          # init is done: "Unable to load/init" no longer applies
        ...run (receive loops, servers) until cancelled...

Returning from ``main`` counts as ``started()``; the module stays loaded (its hooks and
interfaces stay) until it is unloaded. Exceptions after ``started()`` are isolated: the
module's tasks are cancelled, its cleanups run, its interfaces are detached, the failure
is logged and counted, and the stack keeps serving.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # cycle: a module gets a ModuleContext, which the loader defines; types only
    from stack.loader import ModuleContext

#: Bump when the module API changes incompatibly; modules declare the one they target.
MODULE_API_VERSION = 1

ModuleKind = Literal["driver", "protocol"]


@dataclass(frozen=True)
class ModuleEntry:
    kind: ModuleKind
    api: int
    entry: Callable[[ModuleContext], Awaitable[None]]
    description: str = ""
