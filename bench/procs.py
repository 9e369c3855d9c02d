"""Small pieces of ``make bench``'s process handling: a free port, a process's peak memory, a limit
measured in a process of its own."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def run_lines(*command: str) -> list[dict[str, Any]]:
    """Run a measurement in its own process; each stdout line that is a JSON object, in order."""
    proc = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, _ = await proc.communicate()
    return [dict(json.loads(line)) for line in out.decode().splitlines() if line.startswith("{")]


async def run_json(*command: str) -> dict[str, Any]:
    """Run a limit measurement in its own process; its last stdout line is JSON."""
    return (await run_lines(*command))[-1]
