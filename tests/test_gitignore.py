"""Every store and secret file that ``make run`` creates is ignored by git, so none is committed by accident."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cdp import CDP, Settings
from cdp.sample import dev_keys

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    not (ROOT / ".git").exists() and not os.environ.get("CI"),
    reason="an unpacked source tree without .git (CI always runs on a clone, where a missing git fails)",
)
def test_files_a_running_store_creates_are_ignored(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "cdp.db", scheduler_enabled=False, webhooks_allow_private_urls=True)
    with CDP(settings) as cdp:
        dev_keys(cdp, Path(f"{settings.db}.dev-keys.json"))
        cdp.webhooks.create("http://127.0.0.1:9/hook")  # the secret vault's key file
        names = sorted(p.name for p in tmp_path.iterdir())
    assert {"cdp.db", "cdp.db.dev-keys.json", "cdp.db.secret-key"} <= set(names)
    for name in [*names, "cdp.db-wal", "cdp.db-shm", "other.db", "other.db.secret-key"]:
        check = subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=ROOT, check=False)
        assert check.returncode == 0, f"{name} is not in .gitignore"
