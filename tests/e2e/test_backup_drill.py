"""``make backup-drill`` as an operator runs it, in ``make test-long``: the embedded mode with its own
``pgserver`` PostgreSQL (``python -m services.admin backup`` joins that server from another process while a
client writes; ``restore --deleted-since <the source's data directory>`` into a fresh embedded
installation), and the distributed mode (five processes on a fresh database and vhost; the restored one
provisioned as a new installation); everything read back through a platform started on the restore."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.long


@pytest.mark.parametrize("mode", ["embedded", "distributed"])
def test_the_backup_drill_passes(mode: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    done = subprocess.run([sys.executable, "-m", "tests.drill", "--mode", mode], cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    for line in ("verify: counts of ", "verify and end at the manifest's heads",
                 "stayed unreadable (encryption_error)", "made before it began",
                 "each its own value", "the CA's key signs again", "drill: passed"):
        assert line in out, out[-4000:]
