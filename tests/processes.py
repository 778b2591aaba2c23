"""This test process's decoding processes, started cold (``python -m mess.extract.decode_worker``) or forked by
its zygote (``python -P -c "... mess.extract.zygote ..." mess.extract.decode_worker``, whose forks share its command
line)."""

from __future__ import annotations

import psutil

DECODER = "mess.extract.decode_worker"


def decoders(zombies: bool = False) -> list[psutil.Process]:
    """Decoding processes below this one (not the zygotes that fork them); ``zombies``: also those ended and not
    yet reaped, whatever their command line was."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                if zombies:
                    found.append(proc)
                continue
            command = proc.cmdline()
            parent = proc.parent()
            forked = parent is not None and parent.cmdline() == command  # a zygote's fork, not the zygote
            zygote = any("mess.extract.zygote" in part for part in command)
            if DECODER in command and (not zygote or forked):
                found.append(proc)
        except psutil.Error:
            continue
    return found
