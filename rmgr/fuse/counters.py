"""The names of the FUSE sessions' counters (the ``fuse`` group, shared by every mount a
stack serves: ``stack.fuse_counters``), declared in one place (stack/counters.py).

A name not listed raises in strict mode (the tests) and is reported by
tests/arch/test_counter_names.py. Adding a counter means adding its name here.
"""

from __future__ import annotations

from stack.counters import names

#: input no correct client sends, counted (and logged once) by ``Scheduler.refused``
REFUSALS = names("write_too_big ioctl_bad_size ioctl_unknown")

FUSE_COUNTERS: frozenset[str] = REFUSALS | names("""
    requests before_init malformed enosys handler_error reply_dropped reply_rejected poll_notify
    interrupt interrupted busy_poll_hits
    forget_unknown inval_entry
    ioctl_out_too_long ioctl_tty_probe
""")
