"""The Ray cluster address `mess extract --engine ray --address` takes, checked before Ray is asked."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import mess_here
from mess.scale.ray_extract import ScaleError, _check_reachable


def test_a_ray_address_whose_port_is_out_of_range_is_said_and_never_dialled(tmp_path: Path) -> None:
    """`--address HOST:70000` said 'Connection refused' (or, with something at port 4464, went on to Ray): the
    system took the port modulo 65536. A port outside 1-65535 is refused, saying so, before anything is dialled
    (here a listener at the port it would wrap to sees no connection)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        for port in (listener.getsockname()[1] + 65536, 0):
            address = f"127.0.0.1:{port}"
            with pytest.raises(ScaleError, match=rf"^Ray address '{address}': the port is out of range "
                                                 r"\(1-65535\)$"):
                _check_reachable(address)
            with pytest.raises(ScaleError, match="out of range"):
                _check_reachable(f"ray://{address}")
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing came
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "tone.wav", (0.3 * np.sin(2 * np.pi * 220 * np.arange(22050) / 22050)).astype(np.float32), 22050)
    done = mess_here("extract", str(music), "--model", "dsp", "--engine", "ray", "--address", "127.0.0.1:70000",
                     "--store", str(tmp_path / "store"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Ray address '127.0.0.1:70000': the port is out of range (1-65535)" in " ".join(done.stderr.split())
