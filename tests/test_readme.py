"""Every ``sh`` block of the README runs as written against a real ``cdp serve --dev-keys`` (started as
``make run`` starts it), with the keys from the ``export`` line it prints and ``curl`` failing on any HTTP
error. The README's ``http://127.0.0.1:8000`` is the only thing changed: the test server's free port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
PRELUDE = 'set -euo pipefail\ncurl() { command curl --silent --show-error --fail-with-body "$@"; echo; }\n'


def sh_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    env.update(CDP_DB=str(tmp_path / "cdp.db"), CDP_WEBHOOKS_ALLOW_PRIVATE_URLS="true")
    cdp = Path(sys.executable).parent / "cdp"
    log = (tmp_path / "serve.log").open("w+", encoding="utf-8")
    proc = subprocess.Popen(
        [str(cdp), "serve", "--dev-keys", "--port", str(port), "--no-scheduler"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.1)
        printed = Path(log.name).read_text(encoding="utf-8")
        exports = re.search(r"export (WRITE_KEY=\S+) (READ_TOKEN=\S+) (ADMIN_TOKEN=\S+)", printed)
        assert exports, printed
        assert f"API docs:    {url}/docs" in printed and "cdp command: " in printed
        assert f"console:     {url}/console" in printed
        keys = dict(pair.split("=", 1) for pair in exports.groups())
        yield url, {**env, **keys}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_readme_has_shell_examples() -> None:
    blocks = sh_blocks()
    assert len(blocks) >= 4
    assert any("/v1/webhooks" in b and "-d '" in b for b in blocks)  # the `curl -d` admin example


def test_every_shell_example_works_as_written(served: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = served
    for n, block in enumerate(sh_blocks(), start=1):
        script = PRELUDE + block.replace("http://127.0.0.1:8000", url)
        result = subprocess.run(
            ["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"README sh block {n} failed:\n{block}\n{result.stdout}\n{result.stderr}"
    log = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert re.search(r"POST /v1/webhooks 201 \d+\.\dms", log), log  # the access log, from the real server
    assert env["ADMIN_TOKEN"] not in log.split("export ", 1)[1].split("\n", 1)[1]
