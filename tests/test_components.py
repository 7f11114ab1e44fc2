"""Ray and the components of a run (driver/components.py): a local run's Ray listens on
loopback only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# In a process of its own (the tests' own Ray cluster must not count): start a local run's
# Ray with its dashboard, list every TCP socket that Ray's processes listen on, shut down.
LISTENING = """
import json, psutil, ray

from driver.components import connect_ray
from driver.config import RunConfig
connect_ray(RunConfig())
me = psutil.Process()
sockets = set()
for p in [me] + me.children(recursive=True):
    try:
        sockets |= {(c.laddr.ip, c.laddr.port, p.name()) for c in p.net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        pass
ray.shutdown()
print(json.dumps(sorted(sockets)))
"""


def test_a_local_run_listens_on_loopback_only():
    proc = subprocess.run([sys.executable, "-c", LISTENING], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sockets = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(sockets) >= 5  # GCS, raylet, object manager, dashboard, agents, workers...
    exposed = [s for s in sockets if s[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert exposed == [], f"listening beyond loopback: {exposed}"
