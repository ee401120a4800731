#!/usr/bin/env python3
"""Sends one command to a baresip instance through its `cons` module (UDP)
and prints baresip's answer, without the echoed keystrokes and ANSI colours.

    bctl.py PORT COMMAND        e.g.  bctl.py 40123 contacts

The cons module feeds each received byte to baresip's key handler and sends
back what the command printed; a long command is "/NAME [ARGS]\\n".
Exit status 1 if no answer arrives within 3 s (--timeout).
"""
import argparse
import re
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("command")
    ap.add_argument("--timeout", type=float, default=3.0)
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.sendto(("/" + a.command + "\n").encode(), ("127.0.0.1", a.port))
    out = b""
    end = time.time() + a.timeout
    # The answer may come in several datagrams; collect until 0.3 s of quiet.
    while time.time() < end:
        s.settimeout(max(0.05, min(0.3 if out else end - time.time(), end - time.time())))
        try:
            out += s.recv(65535)
        except socket.timeout:
            if out:
                break
    if not out:
        print(f"no answer from baresip cons on 127.0.0.1:{a.port}", file=sys.stderr)
        return 1
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.decode("utf-8", "replace"))
    lines = text.splitlines()
    # The first line echoes the keystrokes ("//c/co/con..."): drop it.
    if lines and lines[0].startswith("/"):
        lines = lines[1:]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
