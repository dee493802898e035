"""The ``crypto`` group's counter names (stack/counters.py): the framework's and
/dev/crypto's. Per-provider numbers (ops, bytes, errors, queue depth, latency) are the
providers' ``ProviderStats``, shown in ``config/crypto``."""

from __future__ import annotations

from stack.counters import names

CRYPTO_COUNTERS: frozenset[str] = names("""
    providers_registered providers_unregistered
    sessions_created sessions_freed sessions_migrated session_no_provider
    dispatched completed failed auth_failures bad_session callback_errors
    provider_errors fallback_sw fallback_limit
    dev_opens dev_refused_usercrypto dev_sessions dev_ops dev_errors dev_bad_memory
    dev_soft_refused
""")
