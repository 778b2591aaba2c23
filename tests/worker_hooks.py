"""Test hooks for the processes that decode audio (a ``sitecustomize.py`` run first by every Python process whose
``PYTHONPATH`` names its folder): the Ray modules' shared cluster starts every worker with both, and so every decoding
process those workers start; tests/test_ids_in_input_order.py's local runs start their decoders with :data:`SLOW_OPEN`.
"""

from __future__ import annotations

# Decoding a file named hang*.wav never ends, as a decoder stuck in a damaged file.
HANGING_DECODER = """
import importlib.abc, importlib.util, sys, time

class Hang(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "mess.extract.prepare":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            real = module.decode_windows
            def decode_windows(record, *args, **kwargs):
                while record.path.name.startswith("hang"):
                    time.sleep(1)
                return real(record, *args, **kwargs)
            module.decode_windows = decode_windows
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Hang())
"""

# Each opening of the file named $MESS_TEST_SLOW_FILE takes $MESS_TEST_SLOW_SECONDS longer (as on a slow disk) and is
# logged in a file of the process's own under the folder $MESS_TEST_SLOW_LOG; nothing where the first is unset.
SLOW_OPEN = """
import os, sys, time


def _slow(event, args):  # the environment is read at each opening: a forked decoder has its caller's
    name = os.environ.get("MESS_TEST_SLOW_FILE")
    if name and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and \\
            os.path.basename(os.fsdecode(args[0])) == name:
        time.sleep(float(os.environ["MESS_TEST_SLOW_SECONDS"]))
        with open(os.path.join(os.environ["MESS_TEST_SLOW_LOG"], str(os.getpid())), "a") as f:
            f.write(name + "\\n")


sys.addaudithook(_slow)
"""
