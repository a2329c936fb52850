"""One-line notices to the terminal: what a command assumed and went on with (errors end the command instead, in
`loramerge.cli`)."""

from __future__ import annotations

import sys


def warn(command: str, message: str) -> None:
    """`loramerge <command>: warning: <message>` on stderr, one line, beside the command's own output."""
    print(f"loramerge {command}: warning: {' '.join(message.split())}", file=sys.stderr)
