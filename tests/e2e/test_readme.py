"""README.md's shell blocks, run as written against a live platform, so the quick start can't rot.

A newcomer pastes "First steps" into bash on a fresh ``make run``, then "Use it from the shell", then the
"API areas" examples. Each test here does the same on a fresh, uninitialised platform of its own (the
first steps call ``sys/init``): the blocks are taken from README.md verbatim and run with
``bash -c 'set -euo pipefail; …'`` and ``COFFER`` set to the platform's address, so any command that
fails — curl included, which the README runs with ``--fail-with-body`` — fails the test. The platform's
outbound settings are ``make run``'s (nothing private or plain-http allowed, no engine anywhere), so an
example that passes here runs against ``make run`` too. An example whose first line is ``# Needs …``
says what it needs first; it runs here only when that is something this machine has (``age``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.platform import Platform
from tests.conftest import ROOT, free_port, own_platform, remember_secret

README = ROOT / "README.md"

#: what an example may say it needs, and whether this machine has it
NEEDS = {"age": lambda: shutil.which("age-keygen") is not None}


def section(title: str) -> str:
    """The text of the README's ``## <title>`` section, up to the next ``## `` heading."""
    text = README.read_text()
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert found, f"README.md has no '## {title}' section"
    return found.group(1)


def bash_blocks(text: str) -> list[str]:
    """Every ```bash block of ``text``, in order (```sh blocks are not meant to be run as they are)."""
    return re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)


def first_block(title: str) -> str:
    blocks = bash_blocks(section(title))
    assert blocks, f"README.md's '## {title}' has no ```bash block"
    return blocks[0]


def needs(block: str) -> str | None:
    """What an example says it needs first (its first line, ``# Needs <what> …``), or None."""
    found = re.match(r"# Needs (\S+)", block)
    return found.group(1) if found else None


async def bash(script: str, platform: Platform, home: Path) -> tuple[int, str, str]:
    """``script`` under ``set -euo pipefail``, as a newcomer's shell would run it: in a directory of its own
    (whose ``.venv`` is this interpreter's, where ``make run`` puts ``coffer``), with a home of its own."""
    (home / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env.update(COFFER=str(platform.url), HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", f"set -euo pipefail\n{script}", cwd=home, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def platform(tmp_path: Path, pg_dsn: str) -> AsyncIterator[Platform]:
    """A fresh, uninitialised platform with make run's outbound settings."""
    async with own_platform("embedded", tmp_path / "platform", pg_dsn, http_port=free_port(),
                            outbound_allowed_cidrs=(), outbound_allow_http=False,
                            engine_allowed_cidrs=()) as p:
        yield p


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def written_value(block: str) -> str:
    """The value the first steps write (``"value": "…"`` of their PUT)."""
    found = re.search(r'-X PUT "\$COFFER/v1/secrets/[^"]+".*?"value": "([^"]+)"', block, flags=re.S)
    assert found, "the first steps write no secret with -X PUT …/v1/secrets/…"
    return remember_secret(found.group(1))


def ran(code: int, out: str, err: str) -> str:
    return f"exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"


async def test_first_steps_run_as_written_and_read_back_what_they_wrote(platform: Platform, home: Path) -> None:
    block = first_block("First steps")
    assert block.startswith("COFFER=${COFFER:-http://127.0.0.1:8700}\n")
    value = written_value(block)
    code, out, err = await bash(block + 'printf "%s\\n" "$H" "$CLIENT_SECRET" >&2\n', platform, home)
    assert code == 0, ran(code, out, err)
    assert out.splitlines()[-1] == value, ran(code, out, err)
    header, client_secret = err.splitlines()[-2:]
    remember_secret(client_secret)
    # the token asked for is the one the rest of the README needs: every scope
    claims = claims_of(header.removeprefix("Authorization: Bearer "))
    assert set(claims["scope"].split()) == {"secrets:read", "secrets:write", "admin", "pki", "leases", "webhooks",
                                            "events"}
    assert files_in(home) == [".venv"], "the first steps wrote a file"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def test_the_cli_block_runs_after_the_first_steps(platform: Platform, home: Path) -> None:
    cli = first_block("Use it from the shell")
    found = re.search(r"echo '([^']+)' \| coffer secrets put (\S+) -", cli)
    assert found, "the CLI block writes no secret with: echo '…' | coffer secrets put PATH -"
    value = remember_secret(found.group(1))
    code, out, err = await bash(first_block("First steps") + cli, platform, home)
    assert code == 0, ran(code, out, err)
    # coffer secrets get (no newline in a pipe), and printenv under coffer run
    assert out.count(value) == 2, ran(code, out, err)
    assert "coffer: running printenv with" in err, ran(code, out, err)


async def test_every_api_area_example_runs_after_the_first_steps_or_says_what_it_needs(
        platform: Platform, home: Path) -> None:
    blocks = bash_blocks(section("API areas"))
    assert len(blocks) >= 11, "one example per API area"
    script, run, skipped = [first_block("First steps")], [], []
    for i, block in enumerate(blocks):
        need = needs(block)
        if need is not None and not (need in NEEDS and NEEDS[need]()):
            skipped.append(block.splitlines()[0])
            continue
        first = next(line for line in block.splitlines() if not line.startswith("#"))
        script.append(f"echo '--- README, API areas, example {i + 1}: {first[:60]}' >&2\n{block}echo\n")
        run.append(first)
    code, out, err = await bash("".join(script), platform, home)
    assert code == 0, ran(code, out, err)
    assert len(run) >= 7, f"only {len(run)} examples ran; skipped: {skipped}"


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces as hyphens)."""
    text = re.sub(r"^```.*?^```$", "", page.read_text(), flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_links_of_the_readme_and_the_docs_lead_to_pages_and_headings_of_this_repository() -> None:
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"^```.*?^```$", "", page.read_text(), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.is_relative_to(ROOT) or not dest.exists():
                broken.append(f"{page.name}: {target} (no such file in the repository)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
        if "../shared/" in text:
            broken.append(f"{page.name}: refers to ../shared/, outside the repository")
    assert not broken, "\n".join(broken)
