"""Explicit survivorship: which value of a trait wins among a profile's records and events, and why."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cdp import CDP
from cdp.cli import cli
from cdp.settings import Settings
from tests.conftest import LiveServer


def import_csv(cdp: CDP, path: Path, text: str) -> None:
    path.write_text(text)
    command = ["import", "records", str(path), "--db", str(cdp.settings.db), "--source", "crm", "--id-column", "id"]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output


def test_within_one_import_the_later_row_wins_and_each_trait_says_where_it_came_from(
    server: LiveServer, read_key: str, tmp_path: Path
) -> None:
    cdp = server.cdp
    import_csv(
        cdp,
        tmp_path / "crm.csv",
        "id,email,first_name,last_name,city\n"
        "C-001,kathy@example.com,Kathy,Miler,Boston\n"
        "C-002,kathy@example.com,Katherine,Miller,\n",
    )
    cdp.identity.refresh_traits()
    pid = cdp.profiles.lookup_id(email="kathy@example.com")
    profile = cdp.profiles.get(pid, explain_traits=True)
    assert profile["traits"]["first_name"] == "Katherine" and profile["traits"]["last_name"] == "Miller"
    assert profile["traits"]["address"]["city"] == "Boston"  # the later row has none: the earlier one's stays
    sources = profile["trait_sources"]
    assert sources["first_name"]["record"] == {"source": "crm", "external_id": "C-002"}
    assert sources["first_name"]["rule"].startswith("latest (same time")
    assert sources["address.city"]["record"]["external_id"] == "C-001"
    assert sources["address.city"]["rule"] == "only value"
    assert sources["email"]["value"] == "kathy@example.com"
    # The stored traits (what segments and exports read) agree with the explained ones.
    stored = cdp.store.query("SELECT json_extract(traits, '$.first_name') AS f FROM profiles WHERE id = ?", (pid,))
    assert stored[0]["f"] == "Katherine"
    # An identify event sent later wins on time, and says which event it was.
    keys = cdp.keys.create("write", name="web")[1]
    message = {"userId": "k1", "messageId": "m-kate", "traits": {"email": "kathy@example.com", "firstName": "Kate"}}
    cdp.ingest.message("identify", message, write_key=keys)
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        answer = client.get(f"/v1/profiles/{pid}", params={"explain_traits": "true"})
        assert answer.status_code == 200
        body = answer.json()
        assert body["traits"]["first_name"] == "Kate"
        assert body["trait_sources"]["first_name"]["event"]["message_id"] == "m-kate"
        assert body["trait_sources"]["first_name"]["source"] == "web"
        assert "trait_sources" not in client.get(f"/v1/profiles/{pid}").json()
        bad = client.get(f"/v1/profiles/{pid}", params={"explain_traits": "maybe"})
        assert bad.status_code in (400, 422) and "explain_traits" in str(bad.json())


def test_the_value_most_sources_agree_on_wins_where_configured(tmp_path: Path) -> None:
    text = (
        "id,email,first_name\nA-1,ann@example.com,Katherine\nA-2,ann@example.com,Katherine\nA-3,ann@example.com,Kathy\n"
    )
    found = {}
    for majority in ([], ["first_name"]):
        db = tmp_path / f"m{len(majority)}.db"
        with CDP(Settings(db=db, trait_majority=majority)) as cdp:
            import_csv(cdp, tmp_path / "a.csv", text)
            cdp.identity.refresh_traits()
            pid = cdp.profiles.lookup_id(email="ann@example.com")
            profile = cdp.profiles.get(pid, explain_traits=True)
            found[bool(majority)] = (profile["traits"]["first_name"], profile["trait_sources"]["first_name"]["rule"])
    assert found[False][0] == "Kathy"  # by default the latest row wins
    assert found[True] == ("Katherine", "majority (seen in 2 records or events)")
