"""cdp.demo: the synthetic customers behind the demo, the identity-resolution ground truth and benchmarks.

Every test reads real files written to tmp_path; the hard cases are checked in the output, the way an
identity-resolution test would find them.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

import phonenumbers
import pytest

from cdp.demo import DemoSummary, Generator, Job, _generate, generate

NOW = datetime(2026, 11, 1, tzinfo=UTC)
ODD_NOW = datetime(2026, 11, 1, 15, 47, 31, 250_000, tzinfo=UTC)  # not on an hour, nor a 6-hour, boundary
FILES = [
    "salesforce_contacts.csv",
    "hubspot_contacts.csv",
    "events.ndjson",
    "truth_records.csv",
    "truth_events.csv",
    "manifest.json",
]
SALESFORCE = (
    "Id,FirstName,LastName,Email,Phone,MailingStreet,MailingCity,MailingPostalCode,MailingCountry,Birthdate,"
    "Account Name,Title,LeadSource,CreatedDate"
)
HUBSPOT = (
    "Record ID,First Name,Last Name,Email,Phone Number,Street Address,City,Postal Code,Country/Region,"
    "Date of Birth,Company Name,Job Title,Lifecycle Stage"
)
COUNTRY = {"US": "US", "USA": "US", "United States": "US", "GB": "GB", "UK": "GB", "United Kingdom": "GB"}
COUNTRY |= {"CA": "CA", "Canada": "CA"}


@dataclass
class Demo:
    summary: DemoSummary
    rows: dict[str, list[dict[str, str]]]  # source -> CRM rows
    events: list[dict[str, Any]]
    truth_records: list[dict[str, str]]
    truth_events: list[dict[str, str]]

    def entity_of_record(self) -> dict[tuple[str, str], str]:
        return {(t["source"], t["external_id"]): t["entity"] for t in self.truth_records}

    def entity_of_event(self) -> dict[str, str]:
        return {t["message_id"]: t["entity"] for t in self.truth_events}

    def records(self) -> list[tuple[str, str, dict[str, str]]]:
        """(source, entity, row) with the row's fields under the canonical names."""
        entity = self.entity_of_record()
        out = []
        for row in self.rows["salesforce"]:
            canon = {"first": row["FirstName"], "last": row["LastName"], "email": row["Email"]}
            canon |= {"phone": row["Phone"], "street": row["MailingStreet"], "city": row["MailingCity"]}
            canon |= {"postcode": row["MailingPostalCode"], "country": row["MailingCountry"]}
            canon |= {"birthday": row["Birthdate"]}
            out.append(("salesforce", entity["salesforce", row["Id"]], canon))
        for row in self.rows["hubspot"]:
            canon = {"first": row["First Name"], "last": row["Last Name"], "email": row["Email"]}
            canon |= {"phone": row["Phone Number"], "street": row["Street Address"], "city": row["City"]}
            canon |= {"postcode": row["Postal Code"], "country": row["Country/Region"]}
            dob = row["Date of Birth"]
            canon |= {"birthday": datetime.strptime(dob, "%m/%d/%Y").date().isoformat() if dob else ""}
            out.append(("hubspot", entity["hubspot", row["Record ID"]], canon))
        return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load(summary: DemoSummary) -> Demo:
    out = summary.output
    with (out / "events.ndjson").open(encoding="utf-8") as fh:
        events = [json.loads(line) for line in fh]
    rows = {"salesforce": read_csv(out / FILES[0]), "hubspot": read_csv(out / FILES[1])}
    return Demo(summary, rows, events, read_csv(out / FILES[3]), read_csv(out / FILES[4]))


def parse_ts(value: str) -> datetime | None:
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value):
        return None
    return datetime.fromisoformat(value)


def postcode_key(postcode: str) -> str:
    key = postcode.replace(" ", "").upper()
    return key[:5] if key[:5].isdigit() else key


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return load(generate(tmp_path_factory.mktemp("demo"), customers=400, seed=7, now=NOW))


# ------------------------------------------------------------------------------------------- contract
def test_same_seed_and_now_give_the_same_bytes(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", customers=250, seed=3, now=NOW)
    again = generate(tmp_path / "b", customers=250, seed=3, now=NOW)
    other = generate(tmp_path / "c", customers=250, seed=4, now=NOW)
    later = generate(tmp_path / "d", customers=250, seed=3, now=NOW + timedelta(days=1))
    for name in FILES:
        assert (first.output / name).read_bytes() == (again.output / name).read_bytes(), name
    for name in FILES[:5]:
        assert (first.output / name).read_bytes() != (other.output / name).read_bytes(), name
    assert (first.output / "events.ndjson").read_bytes() != (later.output / "events.ndjson").read_bytes()


def test_summary_and_manifest_describe_the_files(demo: Demo) -> None:
    summary, out = demo.summary, demo.summary.output
    assert summary.customers == 400
    assert set(summary.files) == {name.split(".")[0] for name in FILES}
    assert all(path.parent == out and path.is_file() for path in summary.files.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no work files left behind
    assert summary.records == len(demo.rows["salesforce"]) + len(demo.rows["hubspot"])
    assert summary.events == len(demo.events)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["generated_at"] == "2026-11-01T00:00:00.000Z"
    assert (manifest["seed"], manifest["customers"]) == (7, 400)
    assert (manifest["records"], manifest["events"]) == (summary.records, summary.events)
    assert manifest["truth"] == {"records": "truth_records.csv", "events": "truth_events.csv"}
    salesforce, hubspot, events = manifest["files"]
    assert events == {"path": "events.ndjson", "kind": "events", "format": "ndjson"}
    assert {k: salesforce[k] for k in ("path", "kind", "format", "source", "id_column")} == {
        "path": "salesforce_contacts.csv",
        "kind": "records",
        "format": "csv",
        "source": "salesforce",
        "id_column": "Id",
    }
    assert salesforce["map"] == {
        "FirstName": "first_name",
        "LastName": "last_name",
        "Email": "email",
        "Phone": "phone",
        "MailingStreet": "address.street",
        "MailingCity": "address.city",
        "MailingPostalCode": "address.postal_code",
        "MailingCountry": "address.country",
        "Birthdate": "birthday",
        "Account Name": "company",
        "Title": "title",
    }
    assert (hubspot["source"], hubspot["id_column"], hubspot["path"]) == (
        "hubspot",
        "Record ID",
        "hubspot_contacts.csv",
    )
    assert hubspot["map"] == {
        "First Name": "first_name",
        "Last Name": "last_name",
        "Email": "email",
        "Phone Number": "phone",
        "Street Address": "address.street",
        "City": "address.city",
        "Postal Code": "address.postal_code",
        "Country/Region": "address.country",
        "Date of Birth": "birthday",
        "Company Name": "company",
        "Job Title": "title",
    }


def _case_safe(id15: str) -> str:
    """Salesforce's 3-character suffix that makes a 15-character id case-insensitive."""
    return "".join(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[sum(1 << i for i, c in enumerate(id15[k : k + 5]) if c.isupper())]
        for k in (0, 5, 10)
    )


def test_crm_exports_have_the_exact_headers_and_formats(demo: Demo) -> None:
    out = demo.summary.output
    assert (out / FILES[0]).read_text(encoding="utf-8").splitlines()[0] == SALESFORCE
    assert (out / FILES[1]).read_text(encoding="utf-8").splitlines()[0] == HUBSPOT
    sf, hs = demo.rows["salesforce"], demo.rows["hubspot"]
    assert 0.5 * 400 < len(sf) < 0.75 * 400 and 0.4 * 400 < len(hs) < 0.65 * 400
    assert all(None not in row and None not in row.values() for row in sf + hs)  # every row has every column
    ids = [row["Id"] for row in sf]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"003[0-9A-Za-z]{15}", i) and i[15:] == _case_safe(i[:15]) for i in ids)
    record_ids = [row["Record ID"] for row in hs]
    assert len(set(record_ids)) == len(record_ids) and all(r.isdigit() for r in record_ids)
    for row in sf:
        assert row["Birthdate"] == "" or date.fromisoformat(row["Birthdate"]) < NOW.date()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", row["CreatedDate"])
        assert row["MailingCountry"] in COUNTRY
    for row in hs:
        assert row["Date of Birth"] == "" or re.fullmatch(r"\d\d/\d\d/\d{4}", row["Date of Birth"])
        assert row["Country/Region"] in ("United States", "United Kingdom", "Canada")
        assert row["Lifecycle Stage"]
    ages = [(NOW.date() - date.fromisoformat(r["Birthdate"])).days / 365.25 for r in sf if r["Birthdate"]]
    assert min(ages) >= 18 and max(ages) <= 82


def test_phones_are_fictional_and_readable_with_a_us_default(demo: Demo) -> None:
    seen = 0
    for _source, _entity, row in demo.records():
        if not row["phone"]:
            continue
        seen += 1
        country = COUNTRY.get(row["country"], "")
        number = phonenumbers.parse(row["phone"], "US")  # the importer's default region
        assert phonenumbers.is_possible_number(number), row["phone"]
        if row["phone"].startswith("+44"):
            assert number.country_code == 44
            national = str(number.national_number)
            assert national.startswith("7700") or re.match(r"(2079460|1\d\d49[68]0|2920180|289649)", national)
        else:
            assert number.country_code == 1 and country in ("US", "CA", "")
            assert str(number.national_number)[3:6] == "555"
        if country == "GB":
            assert row["phone"].startswith("+44")
    assert seen > 300


def test_every_event_is_a_segment_message(demo: Demo) -> None:
    types = Counter(event["type"] for event in demo.events)
    assert set(types) == {"track", "identify", "page", "screen"}
    assert len({event["messageId"] for event in demo.events}) == len(demo.events)
    for event in demo.events:
        assert "sentAt" not in event and "writeKey" not in event
        assert isinstance(event["messageId"], str) and event["messageId"]
        assert event.get("userId") or event.get("anonymousId")
        context = event["context"]
        assert context["library"]["name"] and context["library"]["version"]
        if event["type"] == "track":
            assert event["event"] and isinstance(event["properties"], dict)
        elif event["type"] == "identify":
            assert {"email", "first_name", "last_name"} <= set(event["traits"]) and event["userId"]
        elif event["type"] == "page":
            assert event["name"] and {"path", "url", "title"} <= set(event["properties"])
        else:
            assert event["name"] and isinstance(event["properties"], dict)
        if context["library"]["name"] == "analytics.js":
            assert {"ip", "userAgent", "page"} <= set(context)
            assert context["page"]["url"].startswith("https://")
        elif context["library"]["name"] in ("analytics-ios", "analytics-android"):
            assert {"ip", "userAgent", "app", "device", "os"} <= set(context)
        else:  # the email service, server side
            assert event["event"].startswith("Email ") or event["event"] == "Unsubscribed"
            assert "anonymousId" not in event


def test_timestamps_fall_in_the_window_and_lines_are_in_order(demo: Demo) -> None:
    times = [parse_ts(event["timestamp"]) for event in demo.events]
    good = [t for t in times if t is not None]
    assert 0 < len(times) - len(good) < 0.02 * len(times)  # a few unparseable ones, on purpose
    assert good == sorted(good)
    assert NOW - timedelta(days=120) <= good[0] and good[-1] <= NOW
    recent = sum(t > NOW - timedelta(days=30) for t in good)
    old = sum(t < NOW - timedelta(days=90) for t in good)
    assert recent > 2 * old  # weighted toward recent days


def test_truth_covers_every_record_and_event_exactly_once(demo: Demo) -> None:
    keys = [(t["source"], t["external_id"]) for t in demo.truth_records]
    assert len(keys) == len(set(keys))
    crm = {("salesforce", r["Id"]) for r in demo.rows["salesforce"]} | {
        ("hubspot", r["Record ID"]) for r in demo.rows["hubspot"]
    }
    assert set(keys) == crm and len(keys) == demo.summary.records
    ids = [t["message_id"] for t in demo.truth_events]
    assert len(ids) == len(set(ids)) == len(demo.events)
    assert set(ids) == {event["messageId"] for event in demo.events}
    entities = {t["entity"] for t in demo.truth_records} | {t["entity"] for t in demo.truth_events}
    assert all(re.fullmatch(r"person_\d{6}", e) for e in entities)
    assert 0.95 * 400 <= len(entities) <= 400


# ------------------------------------------------------------------------------------------- identity
def test_users_go_from_anonymous_to_identified_across_devices(demo: Demo) -> None:
    entity = demo.entity_of_event()
    owner: dict[str, set[str]] = defaultdict(set)  # userId -> entities
    devices: dict[str, set[str]] = defaultdict(set)  # userId -> anonymousIds
    anonymous_first: set[str] = set()
    identified: set[str] = set()
    for event in demo.events:
        anon, user = event.get("anonymousId"), event.get("userId")
        if user:
            assert re.fullmatch(r"usr_[0-9a-z]{10}", user)
            owner[user].add(entity[event["messageId"]])
            if anon:
                devices[user].add(anon)
                identified.add(anon)
        elif anon and anon not in identified:
            anonymous_first.add(anon)
    assert all(len(entities) == 1 for entities in owner.values())  # a userId is one person's, always
    assert anonymous_first & identified  # browsed anonymously, then signed in on the same device
    assert any(len(anons) >= 2 for anons in devices.values())  # one user, two devices
    with_user = {e for entities in owner.values() for e in entities}
    assert set(entity.values()) - with_user  # some people never identify
    traits = [event["traits"] for event in demo.events if event["type"] == "identify"]
    assert any("phone" in t for t in traits) and any("plan" in t for t in traits)


def test_the_hard_cases_are_in_the_output(demo: Demo) -> None:
    records = demo.records()
    sources: dict[str, set[str]] = defaultdict(set)
    for source, entity, _row in records:
        sources[entity].add(source)
    assert sum(len(s) == 2 for s in sources.values()) > 50  # many people in both CRMs

    households: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for _source, entity, row in records:
        if row["street"]:
            number = row["street"].replace(",", " ").split()[0]
            households[postcode_key(row["postcode"]), number, row["last"].lower()].add(entity)
    assert any(len(entities) >= 2 for entities in households.values())

    names: dict[tuple[str, str], set[str]] = defaultdict(set)  # strangers with one common full name
    places: dict[str, set[str]] = defaultdict(set)
    for _source, entity, row in records:
        names[row["first"].lower(), row["last"].lower()].add(entity)
        places[entity] |= {postcode_key(row["postcode"]), row["birthday"]} - {""}
    performer = demo.entity_of_event()
    for event in demo.events:
        if event["type"] == "identify":
            full_name = event["traits"]["first_name"].lower(), event["traits"]["last_name"].lower()
            names[full_name].add(performer[event["messageId"]])
    shared = [[places[e] for e in entities if places[e]] for entities in names.values() if len(entities) >= 2]
    assert any(not a & b for known in shared for a, b in combinations(known, 2))  # nothing else in common

    users: dict[str, set[str]] = defaultdict(set)
    for event in demo.events:
        if event.get("anonymousId"):
            users[event["anonymousId"]].add(performer[event["messageId"]])
    assert any(len(entities) >= 2 for entities in users.values())  # a shared device

    by_source_entity: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for source, entity_id, row in records:
        by_source_entity[source, entity_id].append(row)
    duplicates = [rows for rows in by_source_entity.values() if len(rows) >= 2]
    assert any(len({(r["first"], r["last"]) for r in rows}) >= 2 for rows in duplicates)  # a typo'd re-entry


def test_rows_of_one_person_disagree_the_way_real_crms_do(demo: Demo) -> None:
    per_entity: dict[str, list[dict[str, str]]] = defaultdict(list)
    for _source, entity, row in demo.records():
        per_entity[entity].append(row)
    pairs = [rows for rows in per_entity.values() if len(rows) >= 2]
    emails = [{r["email"] for r in rows if r["email"]} for rows in pairs]
    assert any(len({e.strip().lower() for e in es}) < len(es) for es in emails)  # case or spaces differ
    assert any(len({r["phone"] for r in rows if r["phone"]}) >= 2 for rows in pairs)  # phone formats differ
    assert any(len({r["first"] for r in rows}) >= 2 for rows in pairs)  # nickname or typo
    moved = [rows for rows in pairs if len({postcode_key(r["postcode"]) for r in rows if r["postcode"]}) >= 2]
    assert moved
    assert any(not r["phone"] for rows in pairs for r in rows)
    assert any(not r["birthday"] for rows in pairs for r in rows)


# ------------------------------------------------------------------------------------------- behaviour
def test_shoppers_buy_in_their_own_currency_and_spend_is_skewed(demo: Demo) -> None:
    entity = demo.entity_of_event()
    country = {e: COUNTRY[row["country"]] for _s, e, row in demo.records() if row["country"] in COUNTRY}
    currency = {"US": "USD", "GB": "GBP", "CA": "CAD"}
    spend: Counter[str] = Counter()
    orders = [event for event in demo.events if event.get("event") == "Order Completed"]
    assert orders
    for order in orders:
        props = order["properties"]
        assert {"order_id", "total", "revenue", "shipping", "tax", "currency", "products"} <= set(props)
        fields = {"product_id", "sku", "name", "category", "price", "quantity"}
        assert props["products"] and all(fields <= set(p) for p in props["products"])
        who = entity[order["messageId"]]
        if who in country:
            assert props["currency"] == currency[country[who]]
        spend[who] += props["revenue"]
    assert any(order["properties"]["revenue"] < 0 for order in orders)  # bad on purpose
    ranked = sorted(spend.values(), reverse=True)
    top = ranked[: max(1, len(ranked) // 10)]
    assert sum(top) > 0.3 * sum(ranked)  # a minority of high-value customers

    names = Counter(event.get("event") for event in demo.events)
    for name in ("Products Searched", "Product Viewed", "Product Added", "Cart Viewed", "Checkout Started"):
        assert names[name] > 0, name
    for name in ("Email Delivered", "Email Opened", "Email Link Clicked", "Signed Up", "Application Opened"):
        assert names[name] > 0, name
    clicked = next(e for e in demo.events if e.get("event") == "Email Link Clicked")
    assert {"email_id", "campaign_id", "campaign_name"} <= set(clicked["properties"])
    emails = [e["traits"]["email"] for e in demo.events if e["type"] == "identify"]
    assert any(not re.fullmatch(r"\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*", e) for e in emails)  # an invalid one


def test_some_people_churned_and_some_are_very_engaged(demo: Demo) -> None:
    entity = demo.entity_of_event()
    last_seen: dict[str, datetime] = {}
    recent_views: Counter[str] = Counter()
    for event in demo.events:
        when = parse_ts(event["timestamp"])
        if when is None:
            continue
        who = entity[event["messageId"]]
        last_seen[who] = max(last_seen.get(who, when), when)
        if event.get("event") == "Product Viewed" and when > NOW - timedelta(hours=48):
            recent_views[who] += 1
    churned = [who for who, when in last_seen.items() if when < NOW - timedelta(days=30)]
    assert 0.05 * len(last_seen) < len(churned) < 0.5 * len(last_seen)
    assert any(count >= 5 for count in recent_views.values())


# ------------------------------------------------------------------------------------------- api edges
@pytest.mark.parametrize("customers", [0, -3])
def test_fewer_than_one_customer_is_refused(tmp_path: Path, customers: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate(tmp_path, customers=customers)
    assert not list(tmp_path.iterdir())


def test_a_single_customer_and_naive_now_work(tmp_path: Path) -> None:
    naive = generate(tmp_path / "naive", customers=1, seed=1, now=NOW.replace(tzinfo=None))
    aware = generate(tmp_path / "aware", customers=1, seed=1, now=NOW)
    assert naive.customers == 1
    for name in FILES:
        assert (naive.output / name).read_bytes() == (aware.output / name).read_bytes()


def test_default_now_is_the_current_time(tmp_path: Path) -> None:
    summary = generate(tmp_path, customers=5)
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    generated = datetime.fromisoformat(manifest["generated_at"])
    assert abs(datetime.now(UTC) - generated) < timedelta(minutes=5)
    assert summary.events > 0


def test_scale_progress_and_proportional_counts(tmp_path: Path) -> None:
    calls: list[int] = []
    started = time.perf_counter()
    summary = generate(tmp_path, customers=2000, seed=11, now=NOW, progress=calls.append)
    elapsed = time.perf_counter() - started
    assert sum(calls) == 2000 and len(calls) > 10 and all(n > 0 for n in calls)
    assert elapsed < 8, elapsed  # about 0.5 s on a laptop
    assert 1.0 * 2000 < summary.records < 1.35 * 2000
    assert 6 * 2000 < summary.events < 16 * 2000
    demo = load(summary)
    assert len({t["entity"] for t in demo.truth_events}) > 0.97 * 2000
    assert Counter(e.get("event") for e in demo.events)["Unsubscribed"] > 0


# ------------------------------------------------------------------------------------------- streaming
def test_chunks_give_the_same_bytes_whatever_the_number_of_workers(tmp_path: Path) -> None:
    """Big runs are made in independently seeded chunks (in parallel); their ids must never collide."""
    runs = []
    for workers in (1, 2):
        calls: list[int] = []
        out = tmp_path / f"w{workers}"
        out.mkdir()
        runs.append(_generate(out, 450, 5, ODD_NOW, calls.append, chunk_people=150, workers=workers))
        assert sum(calls) == 450
        assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (runs[0].output / name).read_bytes() == (runs[1].output / name).read_bytes(), name
    demo = load(runs[0])
    assert len(demo.events) == len(demo.truth_events) == runs[0].events
    assert len({t["entity"] for t in demo.truth_events}) > 0.97 * 450
    times = [t for t in (parse_ts(e["timestamp"]) for e in demo.events) if t is not None]
    assert times == sorted(times)
    owners: dict[str, set[str]] = defaultdict(set)
    for _source, entity, row in demo.records():
        if row["email"]:
            local, _, domain = row["email"].strip().lower().partition("@")
            owners[local.split("+")[0] + "@" + domain].add(entity)
    assert all(len(entities) == 1 for entities in owners.values())  # no address handed out twice
    truth = demo.entity_of_record()
    assert len(truth) == runs[0].records


def test_spilling_to_disk_does_not_change_the_output(tmp_path: Path) -> None:
    """Above ~100k buffered events lines go to bucket files; force that with a tiny buffer."""
    memory = generate(tmp_path / "memory", customers=300, seed=9, now=ODD_NOW)
    (tmp_path / "spilled").mkdir()
    now_ms = (ODD_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    generator = Generator(Job(tmp_path / "spilled", 300, 9, now_ms, 0, 1, 0, 300))
    generator.spill_lines = 200
    generator.run(None)
    for name in FILES[:5]:
        assert (memory.output / name).read_bytes() == (tmp_path / "spilled" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "spilled").iterdir()) == sorted(FILES[:5])


def test_the_committed_sample_is_what_the_generator_makes(tmp_path: Path) -> None:
    """sample_data/demo is loaded by `make run`; regenerate it when the generator changes (see its README)."""
    committed = Path(__file__).resolve().parent.parent / "sample_data" / "demo"
    fresh = generate(tmp_path, customers=300, seed=42, now=NOW)
    for name in FILES:
        assert (committed / name).read_bytes() == (fresh.output / name).read_bytes(), (
            f"sample_data/demo/{name} is stale: regenerate it as sample_data/README.md shows"
        )
