"""The classroom path: with no network, loading the shapes world and generating opens no socket."""
import subprocess
import sys

SCRIPT = r"""
import socket
attempts = []
real_connect = socket.socket.connect
def refuse(self, address):
    attempts.append(address)
    raise OSError(f"network disabled by the test: {address}")
socket.socket.connect = refuse
socket.create_connection = lambda address, *a, **k: refuse(None, address)

from sdlab.models import load_pipeline
from sdlab.generate import generate
from sdlab.spec import GenerationSpec
pipe = load_pipeline(sys.argv[1], device="cpu")
generate(pipe, GenerationSpec("a red circle", seed=1, steps=2))
print("attempts:", attempts)
"""


def test_no_socket_opens_while_loading_and_generating():
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": "/tmp"}
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + SCRIPT, "shapes-world"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("attempts: []")
