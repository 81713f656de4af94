"""Running a command on a pseudo-terminal, as a person's shell would, to see what they see."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios


def run_on_pty(
    args: list[str], env: dict[str, str], *, columns: int = 100, timeout: float = 120
) -> tuple[int, str]:
    """Run `args` with stdin, stdout and stderr on a new terminal `columns` wide; return its exit
    code and everything it wrote (CRLF line ends folded to LF)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
