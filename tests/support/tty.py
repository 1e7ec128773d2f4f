"""Running a command with its stderr on a pseudo-terminal, as a user at a terminal does."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading


def run_on_terminal(
    cmd: list[str], env: dict[str, str] | None = None, columns: int | None = 100, stdin: bytes | None = None
) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run ``cmd`` with stderr on a pty and stdout on a pipe; return (process, bytes shown on the pty).

    Args:
        cmd: The command.
        env: Variables added to this environment.
        columns: The terminal's width (rows: 30); None leaves the pty without a size, as some
            CI terminals are.
        stdin: Bytes for stdin (default: /dev/null).
    """
    primary, secondary = pty.openpty()
    if columns is not None:
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    blocks: list[bytes] = []

    def drain() -> None:
        # Read while the command runs: a full pty buffer would block its writes.
        while True:
            try:
                block = os.read(primary, 65536)
            except OSError:  # EIO: every writer is closed and all was read
                return
            if not block:
                return
            blocks.append(block)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            cmd,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
            env={**os.environ, **(env or {})},
            timeout=300,
        )
    finally:
        os.close(secondary)
        reader.join(timeout=60)
        os.close(primary)
    return proc, b"".join(blocks)
