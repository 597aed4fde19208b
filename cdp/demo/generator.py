"""One chunk of people: their CRM rows, web, app and email events, and the ground truth."""

from __future__ import annotations

import csv
import heapq
import math
import random
import tempfile
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cdp.demo.people import Device, Person, pick, typo
from cdp.demo.pools import (
    BAD_RATE,
    BAD_TIMESTAMPS,
    BAD_TS_RATE,
    BASE36,
    BASE62,
    CITIES,
    CITY_VARIANTS,
    COMMON_NAMES,
    COMPANY_A,
    COMPANY_B,
    COUNTRIES,
    COUNTRY_NAMES,
    DAY,
    DEVICE_MIX,
    EXTRA_FIRST,
    EXTRA_LAST,
    FEMALE,
    FRENCH_CITIES,
    HEADERS,
    HOUR,
    IP_OCTETS,
    LAST,
    LEAD_SOURCES,
    LEGAL,
    MAIL_DOMAINS,
    MALE,
    MIN,
    NAMES,
    NICKS,
    SEC,
    SPILL_LINES,
    STAGES,
    STREETS_FR,
    STREETS_GB,
    STREETS_NA,
    SUFFIX_GB,
    SUFFIX_NA,
    SUFFIX_RE,
    SUFFIXES,
    TAGGABLE,
    TAGS,
    TIMEZONES,
    TITLES,
    UID_MULT,
    WINDOW_DAYS,
    City,
)
from cdp.demo.shop import (
    AGENT_JSON,
    ANDROID,
    APP_ID,
    APP_VERSIONS,
    CART,
    CATEGORY_PAGES,
    CHEAP,
    CHECKOUT,
    CONFIRM,
    CURRENCY,
    HOME,
    IOS,
    LOCAL_HOURS,
    PRICEY,
    PRODUCTS,
    PROMOS,
    QUERIES,
    REFERRERS,
    SEARCH_PAGES,
    SEARCH_PROPS,
    SHOP,
    SITE,
    ascii,
    dumps,
)
from cdp.demo.spool import Blocks, Job, Spool


def run_job(job: Job) -> tuple[int, int, Blocks]:
    return Generator(job).run(None)


# -------------------------------------------------------------------------------------- generator
class Generator:
    def __init__(self, job: Job) -> None:
        self.job, self.n, self.seed, self.chunk, self.chunks = (
            job,
            job.customers,
            job.seed,
            job.chunk,
            job.chunks,
        )
        shared = random.Random(f"cdp-demo/{job.seed}")  # what every chunk must agree on
        sf_base, hs_base, order_base = (
            shared.randrange(62**6, 62**7),
            shared.randrange(10**10, 8 * 10**10),
            shared.randrange(10**7, 10**8),
        )
        self.uid_offset = shared.randrange(36**10)
        self.rng = random.Random(f"cdp-demo/{job.seed}/{job.chunk}")
        self.r = self.rng.random
        self.now_ms = job.now_ms
        self.today = datetime.fromtimestamp(job.now_ms // SEC, UTC).date()
        self.start_ms = self.now_ms - WINDOW_DAYS * DAY
        self.first_hour = self.start_ms // HOUR  # the spool keeps one list per clock hour from here
        self.width = max(6, len(str(job.customers - 1)))
        # Disjoint id ranges per chunk, so chunks made in parallel never collide.
        self.sf_next, self.hs_next = sf_base + job.chunk * 2**22, hs_base + job.chunk * 10**7
        self.order_next = order_base + job.chunk * 10**7
        self.phone_seq: dict[str, int] = {}
        self.email_bits = bytearray(max(1 << 16, (job.hi - job.lo) * 8))  # a one-hash Bloom filter of emails
        small = job.hi - job.lo < 20 or job.chunk > 0
        # Chunk 0 makes sure every hard case is present in any set of 20 or more people.
        self.forced_at = job.hi if small else job.lo + (job.hi - job.lo) // 5
        hard_cases = (
            "household",
            "shared",
            "common",
            "common_repeat",
            "dup_sf",
            "dup_hs",
            "bad_email",
            "bad_revenue",
            "bad_ts",
            "unsubscribed",
        )
        self.made = dict.fromkeys(hard_cases, 0)
        self.common_used: list[int] = []
        self.delayed: list[tuple[int, int, str, list[str], str]] = []  # duplicate rows, entered later
        self.seq, self.records, self.pushed = job.lo, 0, 0
        self.hour_cache: dict[int, str] = {}
        self.spill_lines = SPILL_LINES
        self.campaigns = self._campaigns(shared)

    # ------------------------------------------------------------------------------ ids and formats
    def _hour(self, hour: int) -> str:
        prefix = self.hour_cache[hour] = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H:")
        return prefix

    def _iso(self, ms: int) -> str:
        hour, rem = divmod(ms, HOUR)
        prefix = self.hour_cache.get(hour) or self._hour(hour)
        return f"{prefix}{rem // MIN:02d}:{rem // SEC % 60:02d}.{rem % SEC:03d}Z"

    def _bad_ts(self, ms: int) -> str:
        """An unparseable timestamp, kept behind the true one so the line still sorts (see `Spool`)."""
        self.made["bad_ts"] += 1
        return f"{self._iso(ms)}\x01{pick(self.r, BAD_TIMESTAMPS)}"

    def _uuid(self, upper: bool = False) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        u = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
        return u.upper() if upper else u

    def _sf_id(self) -> str:
        """An 18-character Contact Id: prefix 003, pod, a sequence and Salesforce's case-safe checksum."""
        self.sf_next += 1 + int(self.r() * 3)
        n, digits = self.sf_next, ""
        for _ in range(9):
            n, d = divmod(n, 62)
            digits = BASE62[d] + digits
        id15 = "0038d0" + digits
        suffix = ""
        for chunk in (id15[0:5], id15[5:10], id15[10:15]):
            bits = sum(1 << i for i, c in enumerate(chunk) if c.isupper())
            suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
        return id15 + suffix

    def _user_id(self, index: int) -> str:
        n, out = (index * UID_MULT + self.uid_offset) % 36**10, ""  # a bijection: unique for every index
        for _ in range(10):
            n, d = divmod(n, 36)
            out += BASE36[d]
        return "usr_" + out

    def _phone(self, city: City, landline: bool) -> str:
        """A unique fictional number: 10 NANP digits (555 exchange first), or a spaced UK drama-range one."""
        if city.country != "GB":
            area = pick(self.r, city.phones)
            k = self.phone_seq.get(area, 0)
            self.phone_seq[area] = k + 1
            k = k * self.chunks + self.chunk  # chunks interleave, so numbers stay unique
            exchange = 555 + k // 10000 if k < 40000 else 200 + (k // 10000) % 300
            return f"{area}{exchange}{(k * 7919 + zlib.crc32(area.encode())) % 10000:04d}"
        if landline and city.phones:
            k = self.phone_seq.get(city.name, 0) * self.chunks + self.chunk
            if k < 1000:
                self.phone_seq[city.name] = self.phone_seq.get(city.name, 0) + 1
                return f"{city.phones[0]}{(k * 337 + 11) % 1000:03d}"
        k = self.phone_seq.get("07700", 0)
        self.phone_seq["07700"] = k + 1
        k = k * self.chunks + self.chunk
        if k < 1000:
            return f"7700 900{(k * 337 + 29) % 1000:03d}"
        if k < 100_000:
            return f"7700 {901000 + (k * 7919) % 99000}"
        return f"7700 {100000 + (k * 7919) % 800000}"

    def _fmt_phone(self, number: str, country: str) -> str:
        x = self.r()
        if country == "GB":
            return "+44 " + number if x < 0.6 else "+44" + number.replace(" ", "")
        a, e, n = number[:3], number[3:6], number[6:]
        if x < 0.35:
            return f"({a}) {e}-{n}"
        if x < 0.8:
            return (f"{a}.{e}.{n}", f"+1 {a} {e} {n}", f"{a}-{e}-{n}")[int((x - 0.35) / 0.15)]
        return (f"+1{number}", number, f"1-{a}-{e}-{n}", f"+1 ({a}) {e}-{n}")[int((x - 0.8) * 20)]

    def _fmt_email(self, email: str, bad: bool = False) -> str:
        x = self.r()
        local, _, domain = email.partition("@")
        if bad:  # for the data-quality report
            return (
                f"{local}@",
                f"{local}@{domain.split('.')[0]}",
                f"{local}@@{domain}",
                f"{local} {domain}",
            )[int(x * 4)]
        if x < 0.05:
            return email.upper() if x < 0.02 else f"{local.title()}@{domain.title()}"
        if x < 0.08:
            return f" {email} " if x < 0.065 else f"{email} "
        if x < 0.12 and domain in TAGGABLE:
            return f"{local}+{pick(self.r, TAGS)}@{domain}"
        return email

    def _claim_email(self, local: str, domain: str) -> str:
        """An address nobody else has. A plain one (at most two trailing digits) belongs to the chunk its
        hash picks; otherwise the local part gets a number of 3+ digits that is this chunk's modulo the
        chunk count. So chunks made apart never hand out the same address."""
        bits = len(self.email_bits) * 8
        email = f"{local}@{domain}"
        if self.chunks > 1 and zlib.crc32(email.encode()) % self.chunks != self.chunk:
            email = ""
        base = local.rstrip("0123456789")
        for _ in range(50):
            if email:
                h = zlib.crc32(email.encode()) % bits
                if not self.email_bits[h >> 3] & (1 << (h & 7)):
                    self.email_bits[h >> 3] |= 1 << (h & 7)
                    return email
            number = (100 // self.chunks + 1 + int(self.r() * 1000)) * self.chunks + self.chunk
            email = f"{base}{number}@{domain}"
        return f"{base}{self.rng.getrandbits(40) * self.chunks + self.chunk}@{domain}"

    # ------------------------------------------------------------------------------------ people
    def _address(self, city: City) -> tuple[str, str, str]:
        r = self.r
        if city.country == "GB":
            street = f"{1 + int(r() * 180)} {pick(r, STREETS_GB)} {pick(r, SUFFIX_GB)}"
            if r() < 0.25:
                street = f"Flat {1 + int(r() * 24)}, {street}"
            letters = "ABDEFGHJLNPQRSTUWXYZ"
            return (
                street,
                city.name,
                f"{pick(r, city.prefixes)} {1 + int(r() * 9)}{pick(r, letters)}{pick(r, letters)}",
            )
        if city.name in FRENCH_CITIES:
            street = f"{100 + int(r() * 9900)} {pick(r, STREETS_FR)}"
        else:
            street = f"{10 + int(r() * 9990)} {pick(r, STREETS_NA)} {pick(r, SUFFIX_NA)}"
        if r() < 0.2:
            street += f", Apt {1 + int(r() * 40)}{pick(r, ('', '', 'A', 'B'))}"
        if city.country == "CA":
            letters = "ABCEGHJKLMNPRSTVWXYZ"
            return (
                street,
                city.name,
                f"{pick(r, city.prefixes)} {int(r() * 10)}{pick(r, letters)}{int(r() * 10)}",
            )
        return street, city.name, f"{pick(r, city.prefixes)}{int(r() * 100):02d}"

    def _fmt_street(self, street: str) -> str:
        x = self.r()
        if x < 0.45:
            return street
        if x < 0.85:  # abbreviated, as typed into the other system
            street = SUFFIX_RE.sub(lambda m: " " + SUFFIXES[m.group(1)], street)
            street = street.replace(", Apt ", " #" if x < 0.6 else " Apt ").replace("Saint-", "St-")
            return street.replace("Sainte-", "Ste-").replace("Flat ", "Flat ").replace(", ", " ", 1)
        return street.upper() if x < 0.9 else street.replace(",", "")

    def _new_person(self, index: int, city: City, last: str | None, age: int | None) -> Person:
        r, country = self.r, city.country
        p = Person(index, f"person_{index:0{self.width}d}", country, city)
        female = r() < 0.5
        extra = EXTRA_FIRST.get(country)
        p.first = pick(r, extra[female] if extra and r() < 0.3 else FEMALE if female else MALE)[0]
        if last is None:
            extra_last = EXTRA_LAST.get(country)
            last = pick(r, extra_last if extra_last and r() < 0.3 else LAST)
        p.last = last
        years = age if age is not None else int(18 + 62 * r() ** 1.3)
        p.birthday = self.today - timedelta(days=int(years * 365.25 + r() * 365))
        p.addr = self._address(city)
        p.mobile = self._phone(city, landline=country == "GB" and r() < 0.35)
        if r() < 0.7:  # employed somewhere with a company email
            k = int(len(COMPANY_A) * len(COMPANY_B) * r() ** 2)
            home = "GB" if k % 10 == 3 else "CA" if k % 10 == 7 else "US"
            legal = LEGAL[home]
            name = f"{COMPANY_A[k % len(COMPANY_A)]} {COMPANY_B[k // len(COMPANY_A)]}"
            p.company = f"{name} {legal[k % len(legal)]}"
            p.title = int(r() * (len(TITLES) - 3))
        elif r() < 0.5:
            p.title = len(TITLES) - 1 - int(r() * 3)  # nurse, student, retired
        p.ip = self._ip(country)
        return p

    def _ip(self, country: str) -> str:
        r = self.r
        return f"{pick(r, IP_OCTETS[country])}.{1 + int(r() * 254)}.{int(r() * 256)}.{1 + int(r() * 254)}"

    def _finish_person(self, p: Person) -> None:
        """Emails, CRM coverage, behaviour and devices, once names and household facts are settled."""
        r = self.r
        first, last = ascii(p.first).lower(), ascii(p.last).lower().replace("'", "").replace(" ", "")
        yy, style = p.birthday.year % 100, int(r() * 8)
        if style < 4:
            local = (f"{first}.{last}", f"{first}{last}", f"{first[0]}{last}", f"{first}_{last}")[style]
        else:
            local = (
                f"{first}.{last}{yy:02d}",
                f"{first}{last[0]}{int(r() * 99)}",
                f"{last}.{first}",
                f"{first}{yy:02d}",
            )[style - 4]
        p.email = self._claim_email(local, pick(r, MAIL_DOMAINS[p.country]))
        if p.company:
            words = p.company.split()
            tld = ".co.uk" if words[-1] in ("Ltd", "PLC") else ".ca" if words[-1] == "Ltd." else ".com"
            domain = (words[0] + words[1]).lower() + tld
            p.work_email = self._claim_email(f"{first}.{last}" if r() < 0.7 else f"{first[0]}{last}", domain)
        p.in_sf, p.in_hs = r() < 0.6, r() < 0.5
        if p.in_sf and (r() < 0.03 or self._force("dup_sf")):
            p.dup_sf = True
            self.made["dup_sf"] += 1
        if p.in_hs and (r() < 0.03 or self._force("dup_hs")):
            p.dup_hs = True
            self.made["dup_hs"] += 1
        if p.in_sf and p.in_hs:
            if r() < 0.06:  # moved house: one system still has the old address
                p.old_addr, p.moved_in = self._address(pick(r, CITIES[p.country])), pick(r, ("sf", "hs"))
            if p.company and r() < 0.06:  # changed jobs: one system still has the old ones
                k = int(r() * len(COMPANY_A))
                p.old_job = (f"{COMPANY_A[k]} {pick(r, COMPANY_B)} Inc.", int(r() * (len(TITLES) - 3)))
                p.job_in = pick(r, ("sf", "hs"))
        x = r()
        p.tier = 2 if x < 0.07 else 1 if x < 0.45 else 0
        p.churned = r() < 0.18
        p.engaged = not p.churned and r() < 0.06
        p.plan = pick(r, ("free", "free", "plus", "pro") if p.tier else ("free", "free", "free", "plus"))
        if r() < (0.8 if p.in_sf or p.in_hs else 0.55):
            p.user_id = self._user_id(p.index)
            p.subscribed = r() < 0.7
        p.devices = [
            self._device(p, kind, p.ip if i == 0 else self._ip(p.country)) for i, kind in enumerate(pick(r, DEVICE_MIX))
        ]

    def _device(self, p: Person, kind: str, ip: str) -> Device:
        r = self.r
        locale = "fr-CA" if p.city.name in FRENCH_CITIES else f"en-{p.country}"
        tz = TIMEZONES[(p.country, p.city.tz)]
        if kind == "web":
            lib = '{"name":"analytics.js","version":"next-1.70.0"}'
            pre = f'{{"ip":"{ip}","library":{lib},"locale":"{locale}",'
            post = f'"timezone":"{tz}","userAgent":{pick(r, AGENT_JSON)}}}'
            return Device(kind, self._uuid(), pre, post)
        version, build = pick(r, APP_VERSIONS)
        app = f'{{"build":"{build}","name":"{SHOP}","namespace":"{APP_ID}","version":"{version}"}}'
        if kind == "ios":
            model, os_version = pick(r, IOS)
            idfv = self._uuid(upper=True)
            device = f'{{"id":"{idfv}","manufacturer":"Apple","model":"{model}","type":"ios"}}'
            lib, os_ = (
                '{"name":"analytics-ios","version":"4.1.8"}',
                f'{{"name":"iOS","version":"{os_version}"}}',
            )
            agent = f"HarborPine/{version} CFNetwork/1498.700.2 Darwin/24.1.0"
        else:
            maker, model, os_version, os_build = pick(r, ANDROID)
            android_id = f"{self.rng.getrandbits(64):016x}"
            device = f'{{"id":"{android_id}","manufacturer":"{maker}","model":"{model}","type":"android"}}'
            lib, os_ = (
                '{"name":"analytics-android","version":"4.11.3"}',
                f'{{"name":"Android","version":"{os_version}"}}',
            )
            agent = f"Dalvik/2.1.0 (Linux; U; Android {os_version}; {model} Build/{os_build})"
        pre = f'{{"app":{app},"device":{device},"ip":"{ip}","library":{lib},"locale":"{locale}","os":{os_},'
        post = f'"timezone":"{tz}","userAgent":"{agent}"}}'
        return Device(kind, self._uuid(upper=kind == "ios"), pre, post)

    def _force(self, key: str) -> bool:
        """A fifth of the way in without this hard case yet: make one now (so small sets have it too)."""
        return self.made[key] == 0 and self.seq >= self.forced_at

    def _group(self, start: int) -> list[Person]:
        """One household, two co-workers sharing a computer, or (mostly) one person."""
        r, left = self.r, self.job.hi - start
        country = pick(r, COUNTRIES)
        city = pick(r, CITIES[country])
        x = r()
        if left >= 2 and (x < 0.022 or self._force("household")):
            showcase = self.made["household"] == 0 and self.chunk == 0
            self.made["household"] += 1
            size = min(left, 3 if r() < 0.3 else 2)
            # a couple, or parents and a grown child
            age = int(30 + 45 * r()) if size == 2 else int(45 + 20 * r())
            people = [self._new_person(start, city, None, age)]
            home = self._phone(city, landline=True) if r() < 0.5 else None
            for k in range(1, size):
                member_age = age - 6 + int(r() * 13) if k == 1 else int(18 + 8 * r())
                member = self._new_person(start + k, city, people[0].last, member_age)
                taken = {q.first for q in people} | {n for q in people for n in NICKS.get(q.first, ())}
                while member.first in taken or (member.first in NICKS and taken & set(NICKS[member.first])):
                    member.first = pick(r, FEMALE if r() < 0.5 else MALE)[0]
                while any(member.birthday == q.birthday for q in people):
                    member.birthday -= timedelta(days=1)
                member.addr, member.ip = people[0].addr, people[0].ip
                people.append(member)
            for q in people:
                q.home = home
                self._finish_person(q)
            if showcase:  # the first household shows in the exports even in a small dataset
                for q in people[:2]:
                    q.plain, q.in_hs = True, True
            if r() < 0.3 or self._force("shared"):
                self._share(people[0], people[1])
            return people
        if left >= 2 and (x < 0.025 or self._force("shared")):  # two co-workers on one office computer
            people = [self._new_person(start + k, city, None, None) for k in range(2)]
            people[1].company = people[0].company
            for q in people:
                self._finish_person(q)
            self._share(people[0], people[1])
            return people
        person = self._new_person(start, city, None, None)
        repeat_due = not self.made["common_repeat"] and self.seq >= 2 * self.forced_at
        repeat_due = repeat_due and len(self.common_used) > 0
        common = r() < 0.03 or self._force("common") or repeat_due  # a very common name, used by strangers
        if common:
            if self.common_used and (not self.made["common_repeat"] or r() < 0.5):
                k = pick(r, self.common_used)
                self.made["common_repeat"] += 1
            else:
                k = int(r() * len(COMMON_NAMES))
                if k in self.common_used:
                    self.made["common_repeat"] += 1
                else:
                    self.common_used.append(k)
            person.first, person.last = COMMON_NAMES[k]
            self.made["common"] += 1
        self._finish_person(person)
        if common and not (person.in_sf or person.in_hs):
            person.in_hs = True  # the collision matters where records are matched
        if common and self.made["common"] <= 2 and self.chunk == 0:
            person.plain = True  # and the first two show it even in a small dataset
        return [person]

    def _share(self, owner: Person, other: Person) -> None:
        device = next((d for d in owner.devices if d.kind == "web"), owner.devices[0])
        device.shared = True
        for q in (owner, other):  # both sign in on it with their own accounts
            if q.user_id is None:
                q.user_id = self._user_id(q.index)
        other.devices.append(device)
        self.made["shared"] += 1

    # --------------------------------------------------------------------------------- CRM rows
    def _records(self, p: Person) -> None:
        """Salesforce rows are written at once; HubSpot's arrive a little shuffled (so the two exports are
        not in the same order); a duplicate is entered again much later, with a slip in the name."""
        for source, present, dup in (("sf", p.in_sf, p.dup_sf), ("hs", p.in_hs, p.dup_hs)):
            if present and source == "sf":
                self._write_row(source, self._crm_row(p, source, False), p.entity)
            elif present:
                self._delay(int(self.r() * 60), source, self._crm_row(p, source, False), p.entity)
            if dup:
                self._delay(1 + int(self.r() * 400), source, self._crm_row(p, source, True), p.entity)

    def _delay(self, people: int, source: str, row: list[str], entity: str) -> None:
        self.pushed += 1
        heapq.heappush(self.delayed, (self.seq + people, self.pushed, source, row, entity))

    def _crm_row(self, p: Person, source: str, dup: bool) -> list[str]:
        r, sf, noisy = self.r, source == "sf", dup or not p.plain
        first, last = p.first, p.last
        if first in NICKS and r() < 0.12 and noisy:
            first = pick(r, NICKS[first])
        if not first.isascii() and r() < 0.5 and noisy:
            first = ascii(first)
        if not last.isascii() and r() < 0.5 and noisy:
            last = ascii(last)
        if dup or (r() < 0.05 and noisy):
            if r() < 0.5:
                first = typo(first, r)
            else:
                last = typo(last, r)
        if r() < 0.02 and noisy:
            first, last = (first.upper(), last.upper()) if r() < 0.5 else (first.lower(), last.lower())
        email = p.work_email if p.work_email and r() < (0.7 if sf else 0.35) else p.email
        email = "" if r() < (0.05 if sf else 0.02) else self._fmt_email(email)
        phone = "" if r() < 0.18 else self._fmt_phone(p.home if p.home and r() < 0.4 else p.mobile, p.country)
        street, city, post = p.old_addr if p.old_addr and p.moved_in == source and noisy else p.addr
        if r() < 0.07 and noisy:
            street = city = post = ""
        else:
            street = self._fmt_street(street)
            if city in CITY_VARIANTS and r() < 0.3:
                city = pick(r, CITY_VARIANTS[city])
            x = r()
            if p.country != "US" and x < 0.1:
                post = post.replace(" ", "") if x < 0.06 else post.lower()
            elif p.country == "US" and x < 0.05:
                post = f"{post}-{1000 + int(r() * 9000)}"  # ZIP+4
        bday: date | None = None if r() < (0.35 if sf else 0.45) else p.birthday
        if bday and bday.day <= 12 and bday.day != bday.month and r() < 0.02:  # day and month swapped
            bday = bday.replace(month=bday.day, day=bday.month)
        company, title = p.old_job if p.old_job and p.job_in == source else (p.company, p.title)
        if company and r() < 0.35:
            company = company.rsplit(" ", 1)[0] if r() < 0.7 else company.replace(" Inc.", ", Inc.")
        titles = TITLES[title] if title is not None else ("",)
        title_text = titles[0] if r() < 0.6 else pick(r, titles)
        created = datetime.fromtimestamp(self.now_ms // SEC - 86_400 - int(r() * 4 * 365 * 86_400), UTC)
        if sf:
            country = p.country if r() < 0.7 else COUNTRY_NAMES[p.country][r() < 0.5]
            birthdate, created_date = bday.isoformat() if bday else "", f"{created:%Y-%m-%dT%H:%M:%S}.000Z"
            return [first, last, email, phone, street, city, post, country, birthdate, company or "",
                    title_text, pick(r, LEAD_SOURCES), created_date]  # fmt: skip
        stage = ("Customer" if r() < 0.9 else "Evangelist") if p.tier else pick(r, STAGES)
        birthdate = f"{bday.month:02d}/{bday.day:02d}/{bday.year}" if bday else ""
        return [first, last, email, phone, street, city, post, COUNTRY_NAMES[p.country][0], birthdate,
                company or "", title_text, stage]  # fmt: skip

    def _write_row(self, source: str, row: list[str], entity: str) -> None:
        if source == "sf":
            rid = self._sf_id()
            self.sf_csv.writerow([rid, *row])
        else:
            self.hs_next += 1 + int(self.r() * 150)
            rid = str(self.hs_next)
            self.hs_csv.writerow([rid, *row])
        self.truth_csv.writerow(["salesforce" if source == "sf" else "hubspot", rid, entity])
        self.records += 1

    def _release(self, upto: int | None) -> None:
        while self.delayed and (upto is None or self.delayed[0][0] <= upto):
            _, _, source, row, entity = heapq.heappop(self.delayed)
            self._write_row(source, row, entity)

    # ----------------------------------------------------------------------------------- events
    def _campaigns(self, rng: random.Random) -> list[tuple[int, str, str]]:
        """A weekly newsletter (Tuesdays, 15:00 UTC) and a few promotions over the window."""
        first = (self.start_ms // DAY + 1) * DAY
        tuesday = first + (5 - first // DAY % 7) % 7 * DAY + 15 * HOUR  # 1970-01-01 was a Thursday
        sends = [(ms, f"Weekly Picks - {datetime.fromtimestamp(ms // SEC, UTC):%b %d}")
                 for ms in range(tuesday, self.now_ms, 7 * DAY)]  # fmt: skip
        for name in PROMOS:
            at = self.start_ms + (DAY + int(rng.random() * (WINDOW_DAYS - 1) * DAY)) // HOUR * HOUR
            sends.append((at, name))
        return [(ms, f"cmp_{4100 + i}", dumps(name)) for i, (ms, name) in enumerate(sorted(sends))]

    def _local_start(self, p: Person, days_ago: float) -> int:
        """A session start that many days ago, at a plausible local hour (evenings are busiest)."""
        ms, off = self.now_ms - int(days_ago * DAY), p.city.tz * HOUR
        t = (ms + off) // DAY * DAY - off + pick(self.r, LOCAL_HOURS) * HOUR + int(self.r() * HOUR)
        if t > self.now_ms - 5 * MIN:
            t -= DAY
        return t + DAY if t < self.start_ms + MIN else t

    def _activity(self, p: Person) -> None:
        """Sessions over the person's active window, then the marketing emails they were sent."""
        r = self.r
        last = 32 + 84 * r() if p.churned else 28 * r() ** 2  # days ago; churned people left a month+ ago
        span = (WINDOW_DAYS - 1 - last) * r() ** 1.5
        count = 1 + int(-math.log(1.0 - r()) * (0.35 + 0.7 * p.tier))
        if count == 1 and len(p.devices) > 1 and r() < 0.6:
            count = 2  # people with two devices use both
        days = [last] + [last + span * r() for _ in range(count - 1)]
        starts = sorted((self._local_start(p, days_ago), False) for days_ago in days)
        if p.engaged:  # very engaged: browsing hard in the last 48 hours
            bursts = 1 + int(r() * 2)
            starts += [(self.now_ms - HOUR * 46 + int(r() * 45 * HOUR), True) for _ in range(bursts)]
            starts.sort()
        devices, login_from = p.devices, 0 if r() < 0.4 else int(r() * len(starts))
        shared_turn = int(r() * len(starts)) if len(devices) > 1 and devices[-1].shared else -1
        seen_shared, end, id_ms = False, 0, 0
        for i, (t, burst) in enumerate(starts):
            if i == shared_turn:
                d = devices[-1]
            elif i == 1 and len(devices) > 1:
                d = devices[1]  # the other device gets used too
            elif i == 0 or len(devices) == 1 or r() < 0.6:
                d = devices[0]
            else:
                d = devices[1 + int(r() * (len(devices) - 1))]
            must, seen_shared = d.shared and not seen_shared, seen_shared or d.shared
            may_login = p.user_id is not None and (i >= login_from or d.shared)
            end, identified = self._session(p, d, t, burst, may_login, must, id_ms == 0)
            id_ms = id_ms or identified
        if p.subscribed and id_ms:
            self._emails(p, id_ms, end if p.churned else self.now_ms)

    def _session(
        self, p: Person, d: Device, t: int, burst: bool, may_login: bool, must: bool, first_id: bool
    ) -> tuple[int, int]:
        """One visit: landing, maybe sign-in, search, product views, cart, checkout, order."""
        r, now, log, bits, cache = self.r, self.now_ms, math.log, self.rng.getrandbits, self.hour_cache
        hours, truth, tail, first_hour = self.spool.hours, self.spool.truth, f",{p.entity}\n", self.first_hour
        web, ios, cur, pre, post = d.kind == "web", d.kind == "ios", CURRENCY[p.country][0], d.pre, d.post
        uid = None if d.shared else d.uid
        ids = f'"userId":"{uid}",{d.anon_ids}' if uid else d.anon_ids
        page, app_ctx, identified = HOME, pre + post, 0
        bad_rate = 1.0 if self._force("bad_ts") else BAD_TS_RATE  # share of unparseable timestamps

        def out(typ: str, body: str) -> None:
            nonlocal t, bad_rate
            t += int(2500 - 30000 * log(1.0 - r()))
            if t > now:
                return  # still going on "now": the rest has not happened yet
            mid = f"ajs-next-{bits(128):032x}" if web else self._uuid(ios)
            hour, rem = divmod(t, HOUR)
            if typ != "identify" and r() < bad_rate:
                ts, bad_rate = self._bad_ts(t), BAD_TS_RATE
            else:
                prefix = cache.get(hour) or self._hour(hour)
                ts = f"{prefix}{rem // MIN:02d}:{rem // SEC % 60:02d}.{rem % SEC:03d}Z"
            ctx = f'{pre}"page":{page},{post}' if web else app_ctx
            line = f'{{"timestamp":"{ts}","type":"{typ}","messageId":"{mid}",{ids},{body},"context":{ctx}}}\n'
            hours[hour - first_hour].append(line)
            truth.append(mid + tail)

        def track(event: str, props: str) -> None:
            out("track", f'"event":"{event}","properties":{props}')

        def view(name: str, new_page: str, screen_props: str) -> None:
            nonlocal page
            if web:
                page = new_page
                out("page", f'"name":"{name}","properties":{page}')
            else:
                out("screen", f'"name":"{name}","properties":{screen_props}')

        def identify() -> None:
            nonlocal ids, identified
            email = p.email if r() < 0.8 or not p.work_email else p.work_email
            bad = r() < BAD_RATE or self._force("bad_email")  # for the data-quality report
            self.made["bad_email"] += bad
            traits = {"email": self._fmt_email(email, bad), "first_name": p.first, "last_name": p.last}
            if p.first in NICKS and r() < 0.2:
                traits["first_name"] = pick(r, NICKS[p.first])
            if r() < 0.4:
                traits["phone"] = self._fmt_phone(p.mobile, p.country)
            if r() < 0.8:
                traits["plan"] = p.plan
            ids = f'"userId":"{p.user_id}",{d.anon_ids}'
            out("identify", f'"traits":{dumps(traits)}')
            if not d.shared:
                d.uid = p.user_id
            if first_id and not identified and r() < 0.4:
                track("Signed Up", f'{{"method":"{pick(r, ("email", "email", "google", "apple"))}"}}')
            identified = identified or t

        x = r()
        if web:
            if x < 0.45:
                name, landing = "Home", HOME
            elif x < 0.75:
                name, landing = "Product Detail", pick(r, PRODUCTS).page
            elif x < 0.9:
                name, landing = "Category", CATEGORY_PAGES[pick(r, PRODUCTS).category]
            else:
                name, landing = "Search", SEARCH_PAGES[pick(r, QUERIES)]
            referrer = pick(r, REFERRERS)
            view(name, f'{landing[:-1]},"referrer":"{referrer}"}}' if referrer else landing, "")
        else:
            track("Application Opened", f'{{"from_background":{"true" if x < 0.5 else "false"}}}')
            view("Home", "", "{}")
        # Every session on a shared device starts signed out; elsewhere people sign in, or now and then again.
        login = (must or r() < 0.85) if d.shared else r() < (0.05 if uid else 0.6)
        if may_login and login:
            identify()
        if r() < 0.25:
            query = pick(r, QUERIES)
            view("Search", SEARCH_PAGES[query], SEARCH_PROPS[query])
            track("Products Searched", SEARCH_PROPS[query])
        pool = PRICEY if p.tier == 2 and r() < 0.8 else CHEAP if r() < 0.5 else PRODUCTS
        seen = [pick(r, pool) for _ in range(5 + int(r() * 8) if burst else 1 + int(-log(1.0 - r()) * 0.9))]
        for product in seen:
            view("Product Detail", product.page, product.screen)
            track("Product Viewed", product.viewed[cur])
        if r() >= (0.06, 0.35, 0.6)[p.tier] * (0.3 if burst else 1.0):
            return t, identified
        cart_id, basket = f"{bits(64):016x}", []
        items = 2 + int(r() * 3) if p.tier == 2 else 1 + (r() < 0.3)  # high-value people fill the cart
        for product in (seen + [pick(r, pool) for _ in range(items)])[:items]:
            qty = 1 + int(r() * 3) if p.tier == 2 else 1 if r() < 0.85 else 2
            basket.append({**product.props[cur], "quantity": qty})
            track("Product Added", f'{product.viewed[cur][:-1]},"cart_id":"{cart_id}","quantity":{qty}}}')
        if r() < 0.6:
            view("Cart", CART, "{}")
            track("Cart Viewed", dumps({"cart_id": cart_id, "products": basket}))
        if r() >= (0.3, 0.6, 0.8)[p.tier]:
            return t, identified
        if may_login and ids == d.anon_ids and r() < 0.7:
            identify()  # signs in at checkout
        self.order_next += 1 + int(r() * 40)
        order_id = f"HP{self.order_next}"
        revenue = round(sum(item["price"] * item["quantity"] for item in basket), 2)
        view("Checkout", CHECKOUT, "{}")
        track(
            "Checkout Started",
            dumps({"order_id": order_id, "value": revenue, "currency": cur, "products": basket}),
        )
        if r() < 0.15:
            return t, identified  # abandoned at checkout
        order: dict[str, Any] = {"order_id": order_id, "affiliation": f"{SHOP} {'Online' if web else 'App'}"}
        if r() < 0.15:
            order["coupon"], order["discount"] = (
                pick(r, ("FALL10", "WELCOME10", "MEMBER10")),
                round(revenue * 0.1, 2),
            )
            revenue = round(revenue * 0.9, 2)
        shipping = 0.0 if revenue >= 75 else {"USD": 7.95, "GBP": 4.95, "CAD": 9.95}[cur]
        if cur == "GBP":  # prices include VAT
            tax, total = round(revenue - revenue / 1.2, 2), round(revenue + shipping, 2)
        else:
            tax = round(revenue * (0.13 if cur == "CAD" else 0.0825), 2)
            total = round(revenue + shipping + tax, 2)
        if r() < BAD_RATE or self._force("bad_revenue"):
            revenue = -revenue  # a refund logged as an order: bad data for the quality report
            self.made["bad_revenue"] += 1
        order.update(total=total, revenue=revenue, shipping=shipping, tax=tax, currency=cur, products=basket)
        track("Order Completed", dumps(order))
        view("Order Confirmation", CONFIRM, f'{{"order_id":"{order_id}"}}')
        return t, identified

    def _emails(self, p: Person, since: int, until: int) -> None:
        """Server-side email events (by userId only) for campaigns sent after the person signed up."""
        r, hours, truth, tail = self.r, self.spool.hours, self.spool.truth, f",{p.entity}\n"
        head = f'"userId":"{p.user_id}","event":"'
        ctx = '"context":{"library":{"name":"analytics-python","version":"2.3.3"}}'
        opens = (0.2, 0.35, 0.5)[p.tier] + (0.2 if p.engaged else 0.0)

        def out(t: int, event: str, props: str) -> bool:
            if t > until:
                return False  # not happened yet (or after the person left)
            mid = self._uuid()
            ts = self._iso(t) if r() >= BAD_TS_RATE else self._bad_ts(t)
            line = f'{{"timestamp":"{ts}","type":"track","messageId":"{mid}",{head}{event}",'
            hours[t // HOUR - self.first_hour].append(f'{line}"properties":{{{props}}},{ctx}}}\n')
            truth.append(mid + tail)
            return True

        for send, campaign, name in self.campaigns:
            if send > until:
                break
            if send < since or r() < 0.55:
                continue
            email_id = f"eml_{self.rng.getrandbits(64):016x}"
            base = f'"email_id":"{email_id}","campaign_id":"{campaign}","campaign_name":{name}'
            t = send + int(r() * 20 * MIN)
            if not out(t, "Email Delivered", base):
                break
            if r() < opens:
                t += int(-math.log(1.0 - r()) * 6 * HOUR)
                if out(t, "Email Opened", base) and r() < 0.25:
                    utm = f"utm_source=newsletter&utm_medium=email&utm_campaign={campaign}"
                    link = f'"link_url":"{SITE}/?{utm}"'
                    out(t + 5000 + int(r() * 180_000), "Email Link Clicked", f"{base},{link}")
                continue
            unsubscribes = r() < 0.02 or self._force("unsubscribed")
            if unsubscribes and out(t + int(r() * 2 * DAY), "Unsubscribed", base):
                self.made["unsubscribed"] += 1
                return  # and no more campaigns

    # ------------------------------------------------------------------------------------ output
    def run(self, progress: Callable[[int], None] | None) -> tuple[int, int, Blocks]:
        """Generate this chunk's people; answer (records, events, where its event buckets are). The only
        chunk writes the final files; one of several writes parts (`c00001-...`) for `_merge`."""
        job, single = self.job, self.job.chunks == 1
        prefix = "" if single else f"c{job.chunk:05d}-"
        paths = [job.out / f"{prefix}{name}" for name in NAMES[:2] + NAMES[3:5]]
        pending, step = 0, max(1, min(10_000, self.n // 100))
        spill_dir: AbstractContextManager[str] = nullcontext(str(job.out))  # the work folder, when chunked
        if single:
            spill_dir = tempfile.TemporaryDirectory(prefix=".events-", dir=job.out)
        with (
            open(paths[0], "w", newline="", encoding="utf-8") as sf,
            open(paths[1], "w", newline="", encoding="utf-8") as hs,
            open(paths[2], "w", newline="", encoding="utf-8") as truth_records,
            open(paths[3], "w", encoding="utf-8") as truth_events,
            spill_dir as tmp,
        ):
            self.sf_csv, self.hs_csv = (
                csv.writer(sf, lineterminator="\n"),
                csv.writer(hs, lineterminator="\n"),
            )
            self.truth_csv = csv.writer(truth_records, lineterminator="\n")
            if single:
                for fh, header in zip((sf, hs, truth_records, truth_events), HEADERS, strict=True):
                    fh.write(",".join(header) + "\n")
            spill_file = Path(tmp) / f"c{job.chunk:05d}-events"
            self.spool = Spool(truth_events, self.first_hour, spill_file)
            try:
                while self.seq < job.hi:
                    people = self._group(self.seq)
                    for person in people:
                        self._records(person)
                        self._activity(person)
                    self.seq += len(people)
                    self._release(self.seq)
                    if len(self.spool.truth) >= self.spill_lines:
                        self.spool.spill()
                    pending += len(people)
                    if progress is not None and pending >= step:
                        progress(pending)
                        pending = 0
                self._release(None)
                if single:
                    events = self.spool.finish(job.out / NAMES[2])
                else:
                    self.spool.spill()
                    events = self.spool.count
            finally:
                self.spool.close()
        if progress is not None and pending:
            progress(pending)
        return self.records, events, self.spool.blocks


CHUNK_PEOPLE = 25_000  # people per independently seeded chunk; fixed, so output never depends on CPUs
