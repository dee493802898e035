"""The crypto framework, built in (issue 18): NetBSD's opencrypto(9) for io-pkt.

``attach(stack)`` makes the framework (``stack/crypto/framework.py``), registers the
software provider ``swcrypto`` (always there), offers the framework as the ``CRYPTO``
service (offload drivers such as ``-d cryptosim`` register with it, IPsec makes its
sessions with it), registers the sysctls ``kern.usercrypto`` and
``kern.cryptodevallowsoft``, publishes ``config/crypto`` (providers and their counters)
and serves ``<prefix>/dev/crypto`` (cryptodev.py). docs/crypto.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rmgr.nodes import TextFile
from stack.crypto.algs import Alg
from stack.crypto.framework import (
    DECRYPT,
    ENCRYPT,
    AlgLimits,
    Crypto,
    CryptoError,
    CryptoRequest,
    Provider,
    Session,
    SessionParams,
)
from stack.crypto.swcrypto import SwCrypto
from stack.services import CRYPTO

if TYPE_CHECKING:  # cycle: the Stack imports its built-in parts; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.crypto")

__all__ = ["DECRYPT", "ENCRYPT", "Alg", "AlgLimits", "Crypto", "CryptoError",
           "CryptoRequest", "Provider", "Session", "SessionParams", "SwCrypto", "attach"]


async def attach(stack: Stack) -> None:
    crypto = Crypto()
    crypto.register(SwCrypto())
    stack.registries.services.register(CRYPTO, crypto)
    stack.sysctl.register("kern.usercrypto", 1, "user processes may use /dev/crypto",
                          lo=0, hi=1)
    stack.sysctl.register("kern.cryptodevallowsoft", 1,
                          "/dev/crypto sessions may use the software provider (1) or "
                          "only an offload engine (0, -1)", lo=-1, hi=1)
    stack.config_dir.add("crypto", TextFile(crypto.render))
    if stack.config.mount:
        from stack.crypto.cryptodev import device_node

        path = f"{stack.config.prefix}/dev/crypto"
        try:
            await stack.attach_mount(device_node(crypto, stack.sysctl), path,
                                     fsname=f"io-pkt{stack.config.instance}-crypto",
                                     allow_other=stack.config.tcpip.flag("allow_other"))
        except OSError as exc:
            log.error("%s not served: %s", path, exc)
