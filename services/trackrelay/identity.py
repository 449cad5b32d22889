"""Who this process is, for lease owners and consumer names: pod (or host) name plus pid.

A restarted process gets a new name, so what its predecessor held is recognisably
someone else's and is taken over by the usual lease and claim rules.
"""

from __future__ import annotations

import os
import socket


def process_name() -> str:
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}-{os.getpid()}"
