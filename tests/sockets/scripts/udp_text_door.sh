#!/bin/bash
# UDP through the text door with nothing but bash builtins and redirections.
# usage: SOCK=... udp_text_door.sh PEER_IP ECHO_PORT LOCAL_PORT
# A read of a datagram socket takes one datagram (cut to the read's size), so read one
# with `read -r -N LEN` (one read(2) of LEN bytes); `read -r line` reads a byte at a
# time from a socket and would keep only the first byte of each datagram.
set -e
D="$SOCK/dev/socket/udp"

# connect: datagrams to the kernel's echo server and their echoes back
exec 3<>"$D/clone"                     # a new UDP socket; fd 3 is its ctl
read -r N <&3
echo "connect $1!$2" >&3               # sets the peer
exec 4<>"$D/$N/data"
msg="ping $N"
printf '%s' "$msg" >&4                 # one write = one datagram
printf 'abcdef' >&4
printf 'gh' >&4
read -r -N "${#msg}" echo1 <&4
read -r -N 3 echo2 <&4                 # "abc": the rest of that datagram is dropped
read -r -N 2 echo3 <&4                 # "gh": the next datagram
read -r remote <"$D/$N/remote"
echo "connected $echo1 $echo2 $echo3 $remote"
exec 4>&- 3>&-

# announce: bind a port, take a datagram from whoever sends, then answer the sender
exec 3<>"$D/clone"
read -r M <&3
echo "announce $3" >&3
read -r local <"$D/$M/local"
echo "bound $local"                    # the test sends now
exec 4<>"$D/$M/data"
read -r -N 5 got <&4
echo "connect $1!$(( $3 + 1 ))" >&3    # the sender's port (the test sends from there)
printf 'got %s' "$got" >&4
read -r remote <"$D/$M/remote"
echo "answered $got $remote"
exec 4>&- 3>&-
