#!/bin/bash
# HTTP/1.0 GET through the text door with nothing but bash builtins and redirections.
# usage: SOCK=... http_text_door.sh HOST PORT PATH
set -e
D="$SOCK/dev/socket/tcp"
exec 3<>"$D/clone"                     # a new connection; fd 3 is its ctl
read -r N <&3                          # its number
echo "connect $1!$2" >&3               # blocks until established
exec 4<>"$D/$N/data"
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&4
read -r status <"$D/$N/status"
echo "status: $status" >&2
while IFS= read -r line <&4 || [ -n "$line" ]; do
	printf '%s\n' "$line"
done
exec 4>&- 3>&-
