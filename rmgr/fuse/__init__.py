"""FUSE kernel protocol, spoken directly on /dev/fuse (no libfuse): see session.py."""

from rmgr.fuse.session import FuseSession, serve_mount

__all__ = ["FuseSession", "serve_mount"]
