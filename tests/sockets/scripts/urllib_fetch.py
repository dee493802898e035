"""Fetch a URL with urllib.request and write the body to a file: urllib_fetch.py URL OUT"""

import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
    body = r.read()
with open(sys.argv[2], "wb") as f:
    f.write(body)
print(r.status, len(body))
