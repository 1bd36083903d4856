"""TensorFlow's start-up chatter, recognised in one place and kept off the user's terminal.

TensorFlow 2.21 logs through absl before absl's logging is initialised, so lines such as
``I0000 00:00:... port.cc:153] oneDNN custom operations are on`` and ``cudart_stub.cc:31]
Could not find cuda drivers`` reach stderr whatever TF_CPP_MIN_LOG_LEVEL says. They are
INFO-level (the ``I`` prefix) and say nothing a user can act on; warnings and errors (``W``,
``E``, ``F`` prefixes) are kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

NOISE = re.compile(r"^(I\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] |"
                   r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR|"
                   r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags)")


def is_noise(line: str) -> bool:
    """Whether ``line`` is TensorFlow start-up chatter (see the module docstring)."""
    return bool(NOISE.match(line))


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Drop start-up chatter from this process's stderr (file descriptor 2) while inside.

    The C++ runtime writes to the descriptor directly, so ``sys.stderr`` cannot be wrapped:
    descriptor 2 is pointed at a pipe whose reader thread passes every other byte through at
    once (progress bars included) and holds back only a line that starts like chatter until
    it is complete.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not is_noise(line.decode(errors="replace")):
                    os.write(saved, line + b"\n")
            if pending and not (pending[:1] in (b"I", b"W") and len(pending) < 200):
                os.write(saved, pending)  # a progress bar redrawing itself with \r
                pending = b""
        if pending and not is_noise(pending.decode(errors="replace")):
            os.write(saved, pending)

    thread = threading.Thread(target=pump, name="quiet-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        thread.join(timeout=5)
        os.close(read_end)
        os.close(saved)
