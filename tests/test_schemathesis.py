"""Schemathesis over the real server's ``/openapi.json`` with each kind of key: a bounded, seeded run.

Every operation gets examples, the coverage phase (boundary and invalid values, unexpected methods) and
fuzzing, at most ``MAX_EXAMPLES`` cases each, seed ``SEED``. The run must find no server error, no answer
outside its documented schema, status code or content type, no wrong ``Allow`` header, no schema-valid request
refused (``positive_data_acceptance``) and no schema-violating request accepted (``negative_data_rejection``).
The checks and the few per-operation exceptions (each with its reason) are in ``tests/schemathesis.toml``.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import LiveServer

ST = str(Path(sys.executable).with_name("st"))
SEED = 20261207
MAX_EXAMPLES = 5
CONFIG = Path(__file__).with_name("schemathesis.toml")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "allow_header_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
)


def test_the_config_enables_every_check() -> None:
    config = tomllib.loads(CONFIG.read_text())
    assert config["checks"]["enabled"] is False  # only those named
    assert {name for name, value in config["checks"].items() if isinstance(value, dict) and value["enabled"]} == set(
        CHECKS
    )
    for operation in config["operations"]:  # each exception turns off acceptance of valid data, nothing else
        assert operation["checks"] == {"positive_data_acceptance": {"enabled": False}}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["write", "read", "admin"])
def test_schemathesis_finds_no_server_error(
    server: LiveServer, write_key: str, read_key: str, admin_key: str, kind: str, tmp_path: Path
) -> None:
    secret = {"write": write_key, "read": read_key, "admin": admin_key}[kind]
    result = subprocess.run(
        [
            ST,
            "--config-file",
            str(CONFIG),
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {secret}",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--no-color",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
        cwd=tmp_path,
    )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert "Tested: " in summary and "failures" not in summary.split("SUMMARY")[-1].lower(), summary
