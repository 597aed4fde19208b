"""The `cdp` command line over a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cdp import CDP, Settings
from cdp.cli import cli
from tests.test_records import HEADER, ROWS, write_csv

README = Path(__file__).resolve().parent.parent / "README.md"


def run(*args: str, stderr: bool = False) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout + result.stderr if stderr else result.stdout


def test_every_command_has_help_and_takes_db() -> None:
    def walk(group: click.Group, prefix: list[str]) -> list[list[str]]:
        found = []
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                found += walk(command, [*prefix, name])
            else:
                found.append([*prefix, name])
        return found

    commands = walk(cli, [])
    assert len(commands) >= 10
    for path in commands:
        output = run(*path, "--help")
        assert "--db" in output, path


def test_every_command_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    for group, names in {
        "keys": ["create", "list", "revoke"],
        "import": ["records"],
        "events": ["tail"],
        "demo": ["generate", "load"],
        "identity": ["train", "evaluate"],
        "export": ["records", "profiles"],
        "segments": ["create", "list", "show", "members", "compute"],
    }.items():
        for name in names:
            assert f"cdp {group} {name}" in readme, f"cdp {group} {name}"
    for name in ("serve", "migrate", "quality", "resolve", "backup", "restore"):
        assert f"cdp {name}" in readme


def test_keys_lifecycle(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    output = run("keys", "create", "--kind", "write", "--name", "website", "--db", db)
    secret = output.strip().splitlines()[-1]
    assert secret.startswith("wk_") and " " not in secret
    listed = json.loads(run("keys", "list", "--json", "--db", db))
    assert [(k["kind"], k["name"], k["revoked_at"]) for k in listed] == [("write", "website", None)]
    assert secret not in run("keys", "list", "--db", db)
    run("keys", "revoke", listed[0]["id"], "--db", db)
    assert json.loads(run("keys", "list", "--json", "--db", db))[0]["revoked_at"]
    with CDP(Settings(db=tmp_path / "k.db")) as cdp:
        assert cdp.keys.lookup(secret) is None


def test_db_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_DB", str(tmp_path / "env.db"))
    run("migrate")
    assert (tmp_path / "env.db").exists()
    assert "up to date" in run("migrate")


def test_import_records_reports_and_is_idempotent(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    path = write_csv(tmp_path / "sf.csv", HEADER, ROWS)
    output = run(
        "import",
        "records",
        str(path),
        "--source",
        "salesforce",
        "--id-column",
        "Id",
        "--map",
        "Zip=address.postal_code",
        "--db",
        db,
        stderr=True,
    )
    assert "4 rows: 3 inserted, 0 updated, 0 unchanged, 1 rejected" in output
    assert "row 3:" in output
    again = json.loads(
        run("import", "records", str(path), "--source", "salesforce", "--id-column", "Id", "--json", "--db", db)
    )
    assert again["unchanged"] == 3 and again["inserted"] == 0
    bad = CliRunner().invoke(
        cli, ["import", "records", str(path), "--source", "s", "--id-column", "Id", "--map", "nonsense", "--db", db]
    )
    assert bad.exit_code != 0 and "SOURCE_COLUMN=field" in bad.output


def test_events_tail_and_quality(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with CDP(Settings(db=db)) as cdp:
        _, key = cdp.keys.create("write", "web")
        batch = [{"type": "track", "userId": f"u{i}", "event": f"E{i}"} for i in range(30)]
        batch.append({"type": "identify", "userId": "u1", "traits": {"email": "bad@"}})
        cdp.ingest.batch({"batch": batch}, write_key=key)
    lines = run("events", "tail", "-n", "5", "--db", str(db)).strip().splitlines()
    assert len(lines) == 5 and "identify" in lines[-1] and "E29" in lines[-2]
    as_json = [
        json.loads(line)
        for line in run("events", "tail", "-n", "3", "--json", "--user-id", "u1", "--db", str(db)).splitlines()
    ]
    assert [e["type"] for e in as_json] == ["track", "identify"]
    report = run("quality", "--db", str(db))
    assert "invalid traits.email: 1" in report
    assert json.loads(run("quality", "--json", "--db", str(db)))["events"]


def test_errors_exit_non_zero_with_one_line_on_stderr(tmp_path: Path) -> None:
    cli_path = Path(sys.executable).with_name("cdp")
    result = subprocess.run(
        [str(cli_path), "keys", "revoke", "key_nope", "--db", str(tmp_path / "x.db")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "key_nope" in result.stderr


def test_the_script_keeps_exit_codes_and_output_when_it_ends_early(tmp_path: Path) -> None:
    """`cdp` ends without tearing the interpreter down: its exit status and all output must survive."""
    cli_path = Path(sys.executable).with_name("cdp")

    def cdp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cli_path), *args], capture_output=True, text=True, check=False)

    db = str(tmp_path / "x.db")
    usage = cdp("no-such-command")
    assert usage.returncode == 2 and "No such command" in usage.stderr
    keys = [cdp("keys", "create", "--kind", "write", "--name", f"k{i}", "--db", db) for i in range(3)]
    assert all(k.returncode == 0 for k in keys)
    listed = cdp("keys", "list", "--json", "--db", db)
    assert listed.returncode == 0
    assert sorted(k["name"] for k in json.loads(listed.stdout)) == ["k0", "k1", "k2"]  # every write committed
    big = cdp("export", "records", "--db", db)  # header only, but through the same flush
    assert big.returncode == 0 and big.stdout.startswith("source,external_id,profile_id")


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    runner = CliRunner()
    result = runner.invoke(cli, ["resolve", "--db", db], env={"CDP_MATCH_THRESHOLD": "2"})
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "CDP_MATCH_THRESHOLD" in result.output and "'2'" in result.output
    result = runner.invoke(cli, ["resolve", "--db", db], env={"CDP_MATCH_STRONG_THRESHOLD": "0.9"})
    assert result.exit_code == 1 and "must be at least match_threshold" in result.output
    assert not (tmp_path / "x.db").exists()  # nothing was opened
    ok = runner.invoke(cli, ["resolve", "--db", db, "--json"], env={"CDP_MATCH_STRONG_THRESHOLD": "0.995"})
    assert ok.exit_code == 0, ok.output


def test_identity_split_reads_records_and_identifiers_and_names_a_bad_one(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with CDP(Settings(db=db)) as cdp:
        cdp.ingest.upsert_records(
            [
                {"source": "crm", "external_id": "1", "email": "ann@x.com", "first_name": "Ann"},
                {"source": "crm", "external_id": "2", "email": "bob@y.com", "first_name": "Bob"},
            ]
        )
        ann = cdp.profiles.lookup_id(email="ann@x.com")
        bob = cdp.profiles.lookup_id(email="bob@y.com")
    run("identity", "merge", ann, bob, "--db", str(db))
    for option, value, shape in (("--record", "crm", "SOURCE:EXTERNAL_ID"), ("--identifier", "email:", "TYPE:VALUE")):
        bad = CliRunner().invoke(cli, ["identity", "split", ann, option, value, "--db", str(db)])
        assert bad.exit_code == 2 and f"{value!r} is not {shape}" in bad.output and option in bad.output
    split = json.loads(
        run("identity", "split", ann, "--record", "crm:2", "--identifier", "email:bob@y.com", "--db", str(db))
    )
    with CDP(Settings(db=db)) as cdp:
        assert cdp.profiles.lookup_id(source="crm", external_id="2") == split["new_profile_id"] != ann
        assert cdp.profiles.lookup_id(email="bob@y.com") == split["new_profile_id"]
        assert cdp.profiles.lookup_id(source="crm", external_id="1") == ann
