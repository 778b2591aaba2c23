"""Processes running a child module below a process, started cold (``python -m MODULE``) or forked by its zygote
(``python -P -c "... mess.extract.zygote ..." MODULE``, whose forks share its command line)."""

from __future__ import annotations

import psutil

DECODER = "mess.extract.decode_worker"


def running(module: str, under: int | None = None, zombies: bool = False) -> list[psutil.Process]:
    """The processes below ``under`` (this process by default) that run ``module``, not the zygotes that fork them;
    ``zombies``: also those ended and not yet reaped, whatever their command line was."""
    found = []
    for proc in psutil.Process(under).children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                if zombies:
                    found.append(proc)
                continue
            command = proc.cmdline()
            parent = proc.parent()
            forked = parent is not None and parent.cmdline() == command  # a zygote's fork, not the zygote
            zygote = any("mess.extract.zygote" in part for part in command)
            if module in command and (not zygote or forked):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def decoders(zombies: bool = False) -> list[psutil.Process]:
    """This process's decoding processes (see :func:`running`)."""
    return running(DECODER, zombies=zombies)
