"""``pip install .`` into a fresh virtual environment outside the checkout, then ``cdp demo load`` and
``cdp serve``: the wheel carries everything it needs (migrations, sample data, the HTTP layer) and installs
no top-level ``api`` package.

The fresh environment borrows the third-party dependencies from the running one (a ``.pth`` line pointing
at its site-packages: no download, seconds instead of minutes) and gets cdp itself only from the wheel
(``--no-deps``). The borrowed folder's own ``.pth`` files (the checkout's editable install) are not read
from there, and commands run outside the checkout, so nothing of the source tree can be imported.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.console_helpers import sign_in

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _fresh_env(where: Path) -> Path:
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "borrowed_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    return python


def test_installed_wheel_loads_the_demo_and_serves(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_", "PYTHON"))}
    python = _fresh_env(tmp_path / "venv")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-cache-dir", str(ROOT)],
        check=True, cwd=tmp_path, env=env, timeout=240,
    )  # fmt: skip
    cdp = tmp_path / "venv" / "bin" / "cdp"
    work = tmp_path / "elsewhere"
    work.mkdir()

    where = subprocess.run(
        [python, "-c", "import cdp, importlib.util as u; print(cdp.__file__); print(u.find_spec('api'))"],
        check=True, cwd=work, env=env, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert where[0].startswith(str(tmp_path / "venv")), where  # the wheel's cdp, not the checkout's
    assert where[1] == "None"  # no top-level `api` package

    db = str(work / "cdp.db")
    loaded = subprocess.run(
        [cdp, "demo", "load", "--db", db], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert loaded.returncode == 0, loaded.stderr
    key = subprocess.run(
        [cdp, "keys", "create", "--kind", "read", "--db", db],
        check=True, cwd=work, env=env, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip

    port = free_port()
    server = subprocess.Popen(
        [cdp, "serve", "--db", db, "--port", str(port), "--no-scheduler"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "cdp serve did not answer /healthz"
            time.sleep(0.2)
        page = httpx.get(f"{url}/v1/events?limit=5", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert page.status_code == 200, page.text
        assert len(page.json()["data"]) == 5
        assert httpx.get(f"{url}/openapi.json", timeout=10).status_code == 200
        # The console's templates and static files travel in the wheel: sign in and see people.
        assert httpx.get(f"{url}/console/static/console.css", timeout=10).status_code == 200
        with httpx.Client(base_url=url, timeout=10) as client:
            sign_in(client, key)
            people = client.get("/console/people", headers={"Accept": "text/html"})
            assert people.status_code == 200 and "The people behind the newest events" in people.text
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
