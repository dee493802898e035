"""The resource manager: FUSE sessions, the published file trees, the socket library."""
