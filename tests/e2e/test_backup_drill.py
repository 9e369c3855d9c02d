"""``make backup-drill`` as an operator runs it (a short form for ``make test-long``): the embedded mode with
its own ``pgserver`` PostgreSQL, ``python -m services.admin backup`` joining that server from another process
while a client writes, a tenant deleted, ``restore --deleted-since <the source's data directory>`` into a
fresh embedded installation, and everything read back through a platform started on it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.long


def test_the_backup_drill_passes_in_the_embedded_mode() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    done = subprocess.run([sys.executable, "-m", "tests.drill"], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    for line in ("verify: counts of ", "verify and end at the manifest's heads",
                 "stayed unreadable (encryption_error)", "made before it began",
                 "each its own value", "the CA's key signs again", "drill: passed"):
        assert line in out, out[-4000:]
