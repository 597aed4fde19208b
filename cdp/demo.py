"""Synthetic customers for the demo, identity-resolution tests and benchmarks.

`generate()` writes a deterministic dataset: two CRM exports that disagree the way real ones do (a
Salesforce-shaped and a HubSpot-shaped CSV), the Segment messages the same people sent from browsers,
the mobile app and the email service, and the ground truth (which person each CRM row and each event
really belongs to). Everything is drawn from seeded `random.Random` streams, one per chunk of 25,000
people with its own id ranges, so the same seed, `now` and size give the same bytes on any machine;
several chunks run in worker processes. Events are spilled to disk and sorted a few hours at a time,
so a million customers never sit in memory at once.

The people are built to be hard to resolve: nicknames, typos, formatting noise and missing fields between
a person's rows; within-source duplicates; moves and job changes; households (same surname, address and
sometimes landline, different people); shared devices; and very common names reused by strangers.
sample_data/README.md describes the files.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import tempfile
import threading
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = ["HUBSPOT_HEADER", "SALESFORCE_HEADER", "WINDOW_DAYS", "DemoSummary", "generate"]

SALESFORCE_HEADER = [
    "Id", "FirstName", "LastName", "Email", "Phone", "MailingStreet", "MailingCity", "MailingPostalCode",
    "MailingCountry", "Birthdate", "Account Name", "Title", "LeadSource", "CreatedDate",
]  # fmt: skip
HUBSPOT_HEADER = [
    "Record ID", "First Name", "Last Name", "Email", "Phone Number", "Street Address", "City", "Postal Code",
    "Country/Region", "Date of Birth", "Company Name", "Job Title", "Lifecycle Stage",
]  # fmt: skip
_FIELDS = [
    "first_name", "last_name", "email", "phone", "address.street", "address.city", "address.postal_code",
    "address.country", "birthday", "company", "title",
]  # fmt: skip
WINDOW_DAYS = 120  # every event falls in the 120 days before `now`

_SEC, _MIN, _HOUR, _DAY = 1_000, 60_000, 3_600_000, 86_400_000
_SPILL_LINES = 100_000  # event lines buffered before they are spilled to the bucket files
_BAD_RATE = 0.01  # invalid identify emails, negative revenues
_BAD_TS_RATE = 0.003  # unparseable timestamps, of all events
_BAD_TIMESTAMPS = (
    "Invalid Date",
    "NaN",
    "undefined",
    "2026-13-45T25:61:00Z",
    "0000-00-00 00:00:00",
    "yesterday",
)


@dataclass(frozen=True)
class DemoSummary:
    """What `generate` wrote: counts, and where each file is."""

    output: Path
    customers: int  # people generated
    records: int  # CRM rows written (both sources)
    events: int  # Segment messages written
    files: dict[str, Path]  # logical name -> path


# ---------------------------------------------------------------------------------------------- pools
def _words(text: str, sep: str | None = None) -> list[str]:
    return [word.strip() for word in text.split(sep)]


def _names(spec: str) -> list[tuple[str, tuple[str, ...]]]:
    """'Robert:Bob,Rob Mary' -> [("Robert", ("Bob", "Rob")), ("Mary", ())]."""
    out = []
    for token in spec.split():
        name, _, nicks = token.partition(":")
        out.append((name, tuple(nicks.split(",")) if nicks else ()))
    return out


_MALE = _names(
    "James:Jim,Jimmy,Jamie John:Jack,Johnny Robert:Bob,Rob,Bobby Michael:Mike William:Bill,Will,Billy "
    "David:Dave Richard:Rick,Rich Joseph:Joe,Joey Thomas:Tom,Tommy Charles:Charlie,Chuck Christopher:Chris "
    "Daniel:Dan,Danny Matthew:Matt Anthony:Tony Mark Donald:Don Steven:Steve Paul Andrew:Andy,Drew "
    "Joshua:Josh Kenneth:Ken Kevin Brian George Timothy:Tim Ronald:Ron Edward:Ed,Ted,Eddie Jason "
    "Jeffrey:Jeff Ryan Jacob:Jake Gary Nicholas:Nick Eric Jonathan:Jon Stephen:Steve Justin Scott Brandon "
    "Benjamin:Ben Samuel:Sam Gregory:Greg Alexander:Alex Frank Patrick:Pat Raymond:Ray Dennis Tyler Aaron "
    "Adam Nathan:Nate Henry:Harry,Hank Douglas:Doug Zachary:Zach Peter:Pete Kyle Noah Ethan Jeremy "
    "Walter:Walt Sean Gerald:Jerry Carl Harold:Hal Dylan Arthur:Art Lawrence:Larry Jordan Jesse Bruce "
    "Gabriel:Gabe Logan Alan Juan Albert:Al Elijah:Eli Vincent:Vince Mason Russell:Russ Bradley:Brad "
    "Philip:Phil Eugene:Gene Oliver:Ollie Luis Carlos Miguel Jamal Marcus Wei Hiroshi Arjun Mohammed:Mo "
    "Omar Mateo Tomás:Tom José:Pepe Diego Liam Lucas Kwame Dmitri:Dima"
)
_FEMALE = _names(
    "Mary:Molly Patricia:Pat,Patty,Trish Jennifer:Jen,Jenny Linda Elizabeth:Liz,Beth,Lizzie,Betty "
    "Barbara:Barb Susan:Sue,Susie Jessica:Jess Sarah Karen Lisa Nancy Margaret:Maggie,Peggy,Meg "
    "Sandra:Sandy Ashley Kimberly:Kim Emily:Em Donna Michelle:Shelly Carol Amanda:Mandy Dorothy:Dot "
    "Melissa:Mel Deborah:Deb,Debbie Stephanie:Steph Rebecca:Becky,Becca Sharon Laura Cynthia:Cindy "
    "Kathleen:Kathy Amy Angela:Angie Anna Brenda Pamela:Pam Emma Nicole:Nikki Helen Samantha:Sam "
    "Katherine:Kate,Katie,Kathy Christine:Chris,Chrissy Rachel Janet Catherine:Cathy,Cat Maria Heather "
    "Diane Julie Olivia:Liv Victoria:Vicky,Tori Kelly Lauren Christina:Tina Evelyn:Evie Judith:Judy "
    "Megan:Meg Andrea Hannah Jacqueline:Jackie Teresa:Terri Abigail:Abby Alice Sophia:Sophie Grace "
    "Danielle:Dani Isabella:Bella,Izzy Natalie:Nat Charlotte:Charlie,Lottie Priya Mei Yuki Fatima Ngozi "
    "Sofía Ana Zoë Renée Chloé Aisha Leila Svetlana:Sveta"
)
_EXTRA_FIRST = {  # (male, female) names more common in that country
    "GB": (
        _names("Callum Rhys Hamish Alistair:Ali Declan Oliver:Ollie Harry Alfie Rory Gareth"),
        _names("Siobhan Aoife Niamh Imogen:Immy Harriet:Hattie Freya Poppy Eilidh"),
    ),
    "CA": (
        _names("François Étienne Jean-François Mathieu:Matt Luc Gabriel:Gabe Félix"),
        _names("Geneviève:Gen Émilie Amélie Josée Marie-Ève Camille Mélanie"),
    ),
}
_NICKS = {name: nicks for pool in (_MALE, _FEMALE) for name, nicks in pool if nicks} | {
    name: nicks for pair in _EXTRA_FIRST.values() for pool in pair for name, nicks in pool if nicks
}
_LAST = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker "
    "Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper "
    "Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James "
    "Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez "
    "Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Fisher Vasquez Simmons "
    "Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes "
    "Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison "
    "Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns "
    "Crawford Olson Simpson Porter Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Muñoz Hunt Hicks "
    "Holmes Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt "
    "Garza Daniels Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Spencer Hawkins "
    "Arnold Pierce Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson "
    "Carroll Lane Riley Andrews Ray Delgado Berry Perkins Hoffman Johnston Matthews Richards Willis "
    "Carpenter Lawrence O'Brien O'Connor D'Angelo Smith-Jones Garcia-Lopez Wang Li Zhang Liu Huang Zhao "
    "Wu Tanaka Suzuki Sato Park Choi Pham Kowalski Novak Okafor Adeyemi Haddad Cohen Rossi Müller Schulz"
)
_EXTRA_LAST = {
    "GB": _words(
        "Davies Evans Hughes Clarke Ahmed Khan Ali Singh Hussain MacLeod McKenzie Fitzgerald Byrne "
        "Whitfield Pemberton Ashworth"
    ),
    "CA": _words(
        "Tremblay Gagnon Roy Côté Bouchard Gauthier Morin Lavoie Fortin Gagné Ouellet Pelletier Bélanger "
        "Lévesque Bergeron Leblanc Girard Simard Boucher MacDonald"
    ),
}
# Very common full names that several unrelated people share (different birthdays, addresses, emails).
_COMMON_NAMES = [
    (first, last)
    for first, last in (
        name.split()
        for name in _words(
            "John Smith|Maria Garcia|David Jones|Michael Johnson|James Brown|Mary Williams|Robert Miller|"
            "Jennifer Davis|José Rodriguez|Wei Chen|Sarah Wilson|David Smith|Michael Brown|Emily Taylor",
            "|",
        )
    )
]

# city|postcode prefixes (ZIP3, UK district, Canadian FSA)|area codes, or the UK drama-range landline
# prefix|weight|UTC offset
_CITY_SPECS = {
    "US": (
        "New York|100 101 102 103|212 646 917 332|9|-5;Brooklyn|112|718 347 929|5|-5;"
        "Los Angeles|900 901|213 323 310 424|8|-8;Chicago|606|312 773 872|7|-6;"
        "Houston|770|713 832 281|6|-6;Phoenix|850|602 480 623|4|-7;Philadelphia|191|215 267 445|4|-5;"
        "San Antonio|782|210 726|3|-6;San Diego|921|619 858|4|-8;Dallas|752|214 469 972|5|-6;"
        "Austin|787|512 737|4|-6;San Jose|951|408 669|3|-8;San Francisco|941|415 628|5|-8;"
        "Seattle|981|206 564|5|-8;Denver|802|303 720|4|-7;Boston|021 022|617 857|5|-5;"
        "Atlanta|303|404 678 470|5|-5;Miami|331|305 786|4|-5;Portland|972|503 971|3|-8;"
        "Minneapolis|554|612 952|3|-6;Nashville|372|615 629|3|-6;Raleigh|276|919 984|3|-5;"
        "Columbus|432|614 380|3|-5;Charlotte|282|704 980|3|-5;Detroit|482|313 248|3|-5;"
        "Salt Lake City|841|801 385|2|-7;Pittsburgh|152|412 878|2|-5;Kansas City|641|816|2|-6;"
        "Baltimore|212|410 443|2|-5;St. Louis|631|314 557|2|-6;Indianapolis|462|317 463|2|-5;"
        "Tampa|336|813 656|2|-5;New Orleans|701|504|2|-6;Madison|537|608|1|-6;Boise|837|208 986|1|-7;"
        "Albuquerque|871|505|1|-7;Orlando|328|407 321|2|-5;Sacramento|958|916 279|2|-8;"
        "Cleveland|441|216|2|-5;Omaha|681|402 531|1|-6"
    ),
    "GB": (
        "London|SW1A SW11 SW19 E1 E8 N1 N16 NW3 SE1 SE15 W2 W11 EC1V|20 7946 0|12|0;"
        "Manchester|M1 M4 M14 M20|161 496 0|4|0;Birmingham|B1 B15 B29|121 496 0|4|0;"
        "Leeds|LS1 LS6 LS8|113 496 0|3|0;Glasgow|G1 G3 G12|141 496 0|3|0;"
        "Edinburgh|EH1 EH3 EH9|131 496 0|3|0;Bristol|BS1 BS6 BS8|117 496 0|3|0;"
        "Liverpool|L1 L8 L17|151 496 0|2|0;Sheffield|S1 S10 S11|114 496 0|2|0;"
        "Leicester|LE1 LE2|116 496 0|1|0;Reading|RG1 RG4|118 496 0|1|0;"
        "Newcastle upon Tyne|NE1 NE2|191 498 0|2|0;Cardiff|CF10 CF11|29 2018 0|2|0;"
        "Belfast|BT1 BT9|28 9649 6|1|0;Nottingham|NG1 NG7|-|1|0"
    ),
    "CA": (
        "Toronto|M5V M4C M6K M5A M4L|416 647 437|6|-5;Vancouver|V6B V5K V6K|604 778 236|4|-8;"
        "Montréal|H2X H3A H2T H1V|514 438|4|-5;Ottawa|K1P K2P K1S|613 343|2|-5;"
        "Calgary|T2P T3A T2R|403 587 825|3|-7;Edmonton|T5J T6E|780 587|2|-7;"
        "Winnipeg|R3C R2M|204 431|1|-6;Halifax|B3H B3K|902 782|1|-4;Québec City|G1R G1K|418 581|1|-5;"
        "Victoria|V8W V8V|250 778|1|-8"
    ),
}
_FRENCH_CITIES = {"Montréal", "Québec City"}
_CITY_VARIANTS = {
    "New York": ("New York City", "NYC", "new york"), "Montréal": ("Montreal",),
    "St. Louis": ("Saint Louis",), "Québec City": ("Quebec City", "Québec"),
    "Newcastle upon Tyne": ("Newcastle",), "Brooklyn": ("New York",),
}  # fmt: skip


@dataclass(frozen=True)
class _City:
    country: str
    name: str
    prefixes: tuple[str, ...]
    phones: tuple[str, ...]  # NANP area codes; for GB the one Ofcom drama-range landline prefix, if any
    tz: int


def _cities(country: str) -> list[_City]:
    out = []
    for spec in _CITY_SPECS[country].replace("\n", ";").split(";"):
        name, prefixes, phones, weight, tz = spec.strip().split("|")
        phone_list = () if phones == "-" else (phones,) if country == "GB" else tuple(phones.split())
        out += [_City(country, name, tuple(prefixes.split()), phone_list, int(tz))] * int(weight)
    return out


_CITIES = {country: _cities(country) for country in _CITY_SPECS}
_COUNTRIES = ["US"] * 78 + ["GB"] * 12 + ["CA"] * 10
_COUNTRY_NAMES = {"US": ("United States", "USA"), "GB": ("United Kingdom", "UK"), "CA": ("Canada", "Canada")}
_TIMEZONES = {
    ("US", -5): "America/New_York", ("US", -6): "America/Chicago", ("US", -7): "America/Denver",
    ("US", -8): "America/Los_Angeles", ("GB", 0): "Europe/London", ("CA", -5): "America/Toronto",
    ("CA", -8): "America/Vancouver", ("CA", -7): "America/Edmonton", ("CA", -6): "America/Winnipeg",
    ("CA", -4): "America/Halifax",
}  # fmt: skip
_STREETS_NA = _words(
    "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Sunset Lincoln Jackson Franklin Highland Church "
    "Mill River Spring Valley Willow Chestnut Walnut Madison Jefferson Cherry Forest Meadow Ridge Birch "
    "Hickory Lakeview Magnolia Dogwood Sycamore Harbor Orchard Prospect Union Summit"
)
_STREETS_GB = _words(
    "High Station Church Victoria Park London Mill Queen's King's Manor Green School Albert Grove Richmond "
    "Clarence Windsor York Springfield Chapel Orchard Meadow Beech"
)
_STREETS_FR = _words(
    "rue Saint-Denis|rue Sherbrooke Ouest|boulevard René-Lévesque|avenue du Parc|rue Sainte-Catherine|"
    "avenue Papineau|rue Notre-Dame|chemin de la Côte-Sainte-Catherine|rue Saint-Jean|avenue Laurier",
    "|",
)
_SUFFIXES = {
    "Street": "St", "Avenue": "Ave", "Road": "Rd", "Drive": "Dr", "Lane": "Ln", "Boulevard": "Blvd",
    "Court": "Ct", "Place": "Pl", "Close": "Cl", "Crescent": "Cres", "Gardens": "Gdns", "Terrace": "Ter",
    "Grove": "Gr",
}  # fmt: skip
_SUFFIX_RE = re.compile(r" (" + "|".join(_SUFFIXES) + r")\b")
_SUFFIX_NA = ["Street"] * 4 + ["Avenue"] * 3 + _words("Road Drive Drive Lane Boulevard Court Place Way")
_SUFFIX_GB = ["Road"] * 4 + ["Street"] * 3 + _words("Lane Close Avenue Crescent Gardens Terrace Grove")
_COMPANY_A = _words(
    "Bluefin Brightline Cobalt Summit Redwood Ironclad Lumina Harborview Evergreen Pioneer Silverline Atlas "
    "Keystone Granite Beacon Horizon Cascade Meridian Vertex Sterling Crescent Orchard Falcon Juniper Nimbus "
    "Polaris Sequoia Tidewater Copperleaf Northstar Ember Bramble Kestrel Alder Larkspur Fernhill Saltmarsh "
    "Driftwood Oakridge Willowbrook"
)
_COMPANY_B = _words(
    "Analytics Labs Logistics Health Software Partners Capital Foods Media Robotics Energy Systems "
    "Consulting Retail Insurance Studios Biotech Networks Architects Outfitters"
)
_LEGAL = {"US": ("Inc.", "LLC", "Corp.", "Inc."), "GB": ("Ltd", "Ltd", "PLC"), "CA": ("Inc.", "Ltd.")}
# Job titles, each with the variants people type (abbreviated, reordered, non-English). The last three are
# for people without an employer.
_TITLES = [
    tuple(variants.split("|"))
    for variants in _words(
        "VP Marketing|VP, Marketing|Vice President of Marketing|VP Mktg;Head of Growth|Growth Lead|Head "
        "of Growth Marketing;Marketing Manager|Mktg Manager|Manager, Marketing|Marketing Mgr;Chief "
        "Marketing Officer|CMO;Director of Marketing|Marketing Director|Dir. Marketing|Directeur "
        "Marketing;Responsable marketing|Marketing Lead;Content Marketing Manager|Content "
        "Marketer;Software Engineer|SWE|Software Developer|Ingénieur logiciel;Senior Software "
        "Engineer|Sr. Software Engineer|Sr Software Engineer;Engineering Manager|Eng Manager|Mgr, "
        "Engineering;Chief Technology Officer|CTO;Data Analyst|Analyst, Data|Analyste de données;Senior "
        "Data Analyst|Sr. Data Analyst|Sr Data Analyst;Data Scientist|Científico de Datos;Head of "
        "Data|Director, Data & Analytics;Account Executive|AE|Sr. Account Executive;Sales Manager|Mgr, "
        "Sales|Jefe de Ventas;VP Sales|VP of Sales|Vice President, Sales|Directeur commercial;Sales "
        "Development Representative|SDR|Sales Development Rep;Product Manager|PM|Chef de produit;Head of "
        "Product|VP Product|Director of Product;Chief Executive Officer|CEO|Founder & "
        "CEO|Co-Founder;Owner|Founder|Proprietor;Managing Director|MD|Geschäftsführer;Operations "
        "Manager|Ops Manager|Head of Operations;Customer Success Manager|CSM;HR Manager|People "
        "Partner|Responsable RH;Finance Director|Financial Controller;UX Designer|Product Designer|Sr. UX"
        " Designer;Consultant|Senior Consultant|Sr. Consultant;Teacher|Enseignant;Registered "
        "Nurse|RN;Student|Graduate Student;Retired",
        ";",
    )
]
_LEAD_SOURCES = ["Web"] * 5 + _words("Phone Inquiry|Partner Referral|Trade Show|Advertisement|Other|", "|")
_STAGES = _words("Subscriber|Lead|Lead|Marketing Qualified Lead|Sales Qualified Lead|Opportunity|Other", "|")
_MAIL = {
    "US": "gmail.com*8 yahoo.com*3 outlook.com*2 hotmail.com*2 icloud.com*2 aol.com proton.me comcast.net",
    "GB": "gmail.com*6 hotmail.co.uk*3 yahoo.co.uk*2 outlook.com*2 btinternet.com*2 icloud.com sky.com",
    "CA": "gmail.com*7 hotmail.com*2 yahoo.ca*2 outlook.com*2 icloud.com shaw.ca rogers.com videotron.ca",
}
_MAIL_DOMAINS = {
    country: [d.partition("*")[0] for d in spec.split() for _ in range(int(d.partition("*")[2] or 1))]
    for country, spec in _MAIL.items()
}
_TAGGABLE = {"gmail.com", "outlook.com", "icloud.com", "proton.me", "hotmail.com"}
_TAGS = ("shop", "orders", "harbor", "promo", "news")
_IP_OCTETS = {"US": (24, 47, 67, 68, 71, 73, 75, 76, 96, 98, 107, 174), "GB": (2, 31, 81, 82, 86, 90, 109),
              "CA": (24, 70, 142, 184)}  # fmt: skip
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UID_MULT = 2_654_435_761  # prime, so index -> index * _UID_MULT mod 36**10 is a bijection
_DEVICE_MIX = [("web",)] * 12 + [("ios",), ("ios",), ("android",), ("web", "android")]
_DEVICE_MIX += [("web", "ios")] * 2 + [("web", "web")] * 2  # ("web", "web"): a laptop and a phone browser

# ----------------------------------------------------------------------------------------- the shop
_SITE, _SHOP, _APP_ID = "https://harborandpine.shop", "Harbor & Pine", "com.harborandpine.app"
_PRODUCTS_SPEC = (
    "Apparel:Merino Crew Base Layer=89,Packable Rain Shell=149,Fleece Quarter-Zip=79,Organic Cotton "
    "Tee=32,Trail Running Shorts=48,Down Puffer Vest=129,Wool Beanie=28;Footwear:Trail Runner "
    "3=139,Waterproof Hiking Boot=189,Camp Slip-On=65,Wool Hiking Socks 3-Pack=36;Camping:Ultralight "
    "2P Tent=349,Down Sleeping Bag 20F=279,Insulated Sleeping Pad=119,Camp Stove Kit=89,LED Headlamp "
    "400=39;Kitchen:Enamel Camp Mug=18,Pour-Over Coffee Kettle=54,Cast Iron Skillet 10in=45,Insulated"
    " Bottle 32oz=38;Home:Wool Throw Blanket=119,Linen Duvet Cover=189,Cedar & Smoke "
    "Candle=28,Handwoven Wool Rug 5x8=399;Bags:Daypack 24L=99,Weekender Duffel 45L=159,Hip "
    "Pack=42,Laptop Sleeve 15in=49"
)
_CURRENCY = {"US": ("USD", 1.0), "GB": ("GBP", 0.79), "CA": ("CAD", 1.37)}
_QUERIES = _words(
    "rain jacket|tent|merino|hiking boots|sleeping bag|gift for dad|coffee kettle|duvet|socks|headlamp|"
    "backpack|sleping bag|wool blanket|cast iron|vest|trail runners size 10",
    "|",
)
_REFERRERS = ["", "", "", "https://www.google.com/", "https://www.google.com/", "https://www.google.com/",
              "https://www.bing.com/", "https://www.facebook.com/", "https://www.instagram.com/",
              "https://www.pinterest.com/", "https://duckduckgo.com/", "https://www.reddit.com/"]  # fmt: skip
_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 "
    "Safari/537.36 Edg/130.0.0.0",
]  # fmt: skip
_IOS = (("iPhone15,2", "17.6.1"), ("iPhone15,4", "18.0.1"), ("iPhone16,1", "18.1"), ("iPhone14,5", "17.5"))
_ANDROID = (
    ("Google", "Pixel 8", "14", "AP2A.240905.003"), ("samsung", "SM-S921U", "14", "UP1A.231005.007"),
    ("samsung", "SM-A546B", "13", "TP1A.220624.014"), ("OnePlus", "CPH2581", "14", "UKQ1.230924.001"),
)  # fmt: skip
_APP_VERSIONS = (("3.4.1", "341"), ("3.5.0", "350"), ("3.3.2", "332"))
_PROMOS = _words(
    "Fall Trail Sale|New Arrivals: Outerwear|Free Shipping Weekend|Members Double Points|Back in Stock|"
    "Camp Kitchen Essentials|Holiday Gift Guide|Last Chance: Summer Clearance",
    "|",
)
_HOUR_WEIGHTS = (
    1,
    1,
    0,
    0,
    0,
    0,
    1,
    2,
    3,
    3,
    3,
    3,
    4,
    4,
    3,
    3,
    3,
    3,
    4,
    6,
    7,
    7,
    5,
    3,
)  # local time; evenings
_LOCAL_HOURS = [hour for hour, weight in enumerate(_HOUR_WEIGHTS) for _ in range(weight)]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_AGENT_JSON = [_dumps(agent) for agent in _AGENTS]


def _ascii(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@dataclass(frozen=True)
class _Product:
    name: str
    category: str
    usd: float
    props: dict[str, dict[str, Any]]  # currency -> Segment e-commerce product properties
    viewed: dict[str, str]  # currency -> those properties as JSON
    page: str  # JSON of context.page and of the page call's properties
    screen: str  # JSON of the app's screen properties


def _catalog() -> list[_Product]:
    out: list[_Product] = []
    for block in _PRODUCTS_SPEC.split(";"):
        category, _, items = block.partition(":")
        for item in items.split(","):
            name, _, usd = item.rpartition("=")
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            product_id = hashlib.md5(name.encode()).hexdigest()[:24]
            base = {"product_id": product_id, "sku": f"HP-{category[:3].upper()}-{101 + len(out):04d}",
                    "category": category, "name": name}  # fmt: skip
            props = {}
            for currency, rate in _CURRENCY.values():
                price = float(usd) if currency == "USD" else round(float(usd) * rate) - 0.01
                props[currency] = {**base, "price": price, "currency": currency}
            page = _dumps(
                {"path": f"/products/{slug}", "title": f"{name} | {_SHOP}", "url": f"{_SITE}/products/{slug}"}
            )
            viewed = {currency: _dumps(p) for currency, p in props.items()}
            screen = _dumps({"product_id": product_id, "name": name})
            out.append(_Product(name, category, float(usd), props, viewed, page, screen))
    return out


_PRODUCTS = _catalog()
_CHEAP = [p for p in _PRODUCTS if p.usd < 100]
_PRICEY = [p for p in _PRODUCTS if p.usd >= 90]


def _static_page(path: str, title: str) -> str:
    return _dumps({"path": path, "title": f"{title} | {_SHOP}", "url": _SITE + path})


_HOME = _static_page("/", "Outdoor & Home Goods")
_CART = _static_page("/cart", "Your Cart")
_CHECKOUT = _static_page("/checkout", "Checkout")
_CONFIRM = _static_page("/checkout/confirmation", "Thank you")
_CATEGORY_PAGES = {p.category: _static_page(f"/c/{p.category.lower()}", p.category) for p in _PRODUCTS}
_SEARCH_PAGES = {
    q: _dumps({"path": "/search", "search": "?q=" + q.replace(" ", "+"), "title": f"Search: {q} | {_SHOP}",
               "url": f"{_SITE}/search?q={q.replace(' ', '+')}"})
    for q in _QUERIES
}  # fmt: skip


_SEARCH_PROPS = {q: _dumps({"query": q}) for q in _QUERIES}
_SLIPS = {"i": "y", "y": "i", "e": "a", "a": "e", "o": "u", "u": "o", "s": "z", "c": "k", "n": "m", "m": "n"}


# ---------------------------------------------------------------------------------------- people
T = TypeVar("T")


def _pick(r: Callable[[], float], seq: Sequence[T]) -> T:
    return seq[int(r() * len(seq))]


class _Device:
    """A browser or an app install: one anonymousId, one context; `uid` is who is signed in on it."""

    __slots__ = ("anon_ids", "kind", "post", "pre", "shared", "uid")

    def __init__(self, kind: str, anon: str, pre: str, post: str) -> None:
        self.kind = kind  # web, ios, android
        self.anon_ids = f'"anonymousId":"{anon}"'
        self.pre, self.post = pre, post  # context JSON before and after "page"
        self.uid: str | None = None
        self.shared = False  # used by two people: every session starts signed out


class _Person:
    __slots__ = (
        "addr", "birthday", "churned", "city", "company", "country", "devices", "dup_hs", "dup_sf", "email",
        "engaged", "entity", "first", "home", "in_hs", "in_sf", "index", "ip", "job_in", "last", "mobile",
        "moved_in", "old_addr", "old_job", "plain", "plan", "subscribed", "tier", "title", "user_id",
        "work_email",
    )  # fmt: skip

    def __init__(self, index: int, entity: str, country: str, city: _City) -> None:
        self.index, self.entity, self.country, self.city = index, entity, country, city
        self.first = self.last = self.email = self.mobile = self.ip = self.moved_in = self.job_in = ""
        self.birthday = date(2000, 1, 1)
        self.addr: tuple[str, str, str] = ("", "", "")
        self.old_addr: tuple[str, str, str] | None = None
        self.home: str | None = None  # a landline shared by the household
        self.work_email: str | None = None
        self.company: str | None = None
        self.title: int | None = None  # index into _TITLES
        self.old_job: tuple[str, int] | None = None
        self.user_id: str | None = None
        self.tier = 0  # 0 browses, 1 buys, 2 high value
        self.churned = self.engaged = self.subscribed = False
        self.plan = "free"
        self.devices: list[_Device] = []
        self.in_sf = self.in_hs = self.dup_sf = self.dup_hs = False
        self.plain = False  # a showcase hard case: CRM rows keep the name and address as they are


def _typo(word: str, r: Callable[[], float]) -> str:
    """One realistic slip: a transposed, dropped, doubled or swapped letter (the first letter survives)."""
    if len(word) < 3:
        return word + word[-1]
    for _ in range(8):
        i, op = 1 + int(r() * (len(word) - 2)), r()
        if op < 0.3:
            out = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        elif op < 0.55:
            out = word[:i] + word[i + 1 :]
        elif op < 0.7:
            out = word[: i + 1] + word[i:]
        else:
            out = word[:i] + _SLIPS.get(word[i], "e" if word[i] != "e" else "i") + word[i + 1 :]
        if out != word:
            return out
    return word + "e"


_Blocks = dict[int, list[tuple[int, int, int]]]  # bucket -> (offset, length, marks) of its spilled blocks


class _Spool:
    """Event lines on their way to a time-sorted file, without holding them all in memory.

    A line starts with its own timestamp (`{"timestamp":"2026-...`), so sorting lines as text sorts them
    by time; an unparseable timestamp is stored as `<true time>\x01<bad text>` and the true part is cut
    on output (`_unmark`). Lines wait in one list per clock hour. A spill appends them to one file as a
    block per bucket (6 hours, or 1 hour in the busy last week) and notes where each block is; at the end
    every bucket is read back (from every chunk's file when there are several) and sorted on its own.
    The truth (`message_id,entity`) is written in generation order as it goes.
    """

    def __init__(self, truth: IO[str], first_hour: int, path: Path) -> None:
        self.truth_file, self.first_hour, self.path = truth, first_hour, path
        self.hours: list[list[str]] = [[] for _ in range(WINDOW_DAYS * 24 + 1)]
        self.truth: list[str] = []  # one "message_id,entity" line per buffered event
        self.blocks: _Blocks = {}
        self.file: IO[bytes] | None = None
        self.count = 0

    def spill(self) -> None:
        self.count += len(self.truth)
        self.truth_file.write("".join(self.truth))
        self.truth.clear()
        if self.file is None:
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        first, hourly = 0, len(self.hours) - _HOURLY_BUCKETS
        while first < len(self.hours):  # a bucket is named after the clock hour it starts at
            if first >= hourly:  # the busy last days: one bucket per hour
                bucket, stop = self.first_hour + first, first + 1
            else:  # before that, whole 6-hour stretches of the clock
                bucket = (self.first_hour + first) // _BUCKET_HOURS * _BUCKET_HOURS
                stop = min(hourly, bucket + _BUCKET_HOURS - self.first_hour)
            hours = range(first, stop)
            data = "".join(line for hour in hours for line in self.hours[hour]).encode()
            if data:
                self.blocks.setdefault(bucket, []).append((self.file.tell(), len(data), data.count(b"\x01")))
                self.file.write(data)
                for hour in hours:
                    self.hours[hour].clear()
            first = hours.stop

    def finish(self, path: Path) -> int:
        """Write the events sorted by time (all in memory if they never spilled); answer how many."""
        if self.file is None:
            with open(path, "wb") as out:
                for lines in self.hours:
                    lines.sort()
                    out.write(_unmark("".join(lines).encode()))
            self.truth_file.write("".join(self.truth))
            return len(self.truth)
        self.spill()
        self.close()
        blocks = sorted(self.blocks.items())
        path.write_bytes(b"")
        _sort_buckets([(bucket, [(self.path, *part) for part in parts]) for bucket, parts in blocks], path, 0)
        return self.count

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _unmark(blob: bytes) -> bytes:
    """Drop the true time (24 characters) kept in front of each `\x01`, and the mark itself."""
    if b"\x01" not in blob:
        return blob
    parts, start = [], 0
    while (mark := blob.find(b"\x01", start)) >= 0:
        parts.append(blob[start : mark - 24])
        start = mark + 1
    parts.append(blob[start:])
    return b"".join(parts)


# buckets to sort, each with the (file, offset, length, marks) of its blocks
_Plan = list[tuple[int, list[tuple[Path, int, int, int]]]]


def _sort_buckets(plan: _Plan, out: Path, at: int) -> int:
    """Sort each bucket's blocks (from every chunk's spill file) and write them, in bucket order, into
    `out` from byte `at` on; answer how many bytes that was.

    Each spill file is opened once and one bucket is in memory at a time. When chunks were made in
    parallel, several of these run at once, each writing its own stretch of the output.
    """
    files: dict[Path, IO[bytes]] = {}
    written = 0
    try:
        with open(out, "r+b") as dest:
            dest.seek(at)
            for _bucket, blocks in plan:
                lines: list[bytes] = []
                for path, offset, length, _marks in blocks:
                    if path not in files:
                        files[path] = open(path, "rb")  # noqa: SIM115 - closed below
                    files[path].seek(offset)
                    lines += files[path].read(length).splitlines(keepends=True)
                lines.sort()
                written += dest.write(_unmark(b"".join(lines)))
    finally:
        for fh in files.values():
            fh.close()
    return written


def _size(plan: _Plan) -> int:
    """Bytes `plan` writes: what was spilled, less the 24-character true time and mark of each bad line."""
    return sum(length - 25 * marks for _, blocks in plan for *_, length, marks in blocks)


@dataclass(frozen=True)
class _Job:
    """One chunk of people, generated on its own (in a worker process when there are several)."""

    out: Path  # the final files when this is the only chunk; else the work folder for parts
    customers: int  # in the whole dataset
    seed: int
    now_ms: int
    chunk: int
    chunks: int
    lo: int  # people lo..hi-1
    hi: int


def _run_job(job: _Job) -> tuple[int, int, _Blocks]:
    return _Generator(job).run(None)


# -------------------------------------------------------------------------------------- generator
class _Generator:
    def __init__(self, job: _Job) -> None:
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
        self.today = datetime.fromtimestamp(job.now_ms // _SEC, UTC).date()
        self.start_ms = self.now_ms - WINDOW_DAYS * _DAY
        self.first_hour = self.start_ms // _HOUR  # the spool keeps one list per clock hour from here
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
        self.spill_lines = _SPILL_LINES
        self.campaigns = self._campaigns(shared)

    # ------------------------------------------------------------------------------ ids and formats
    def _hour(self, hour: int) -> str:
        prefix = self.hour_cache[hour] = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H:")
        return prefix

    def _iso(self, ms: int) -> str:
        hour, rem = divmod(ms, _HOUR)
        prefix = self.hour_cache.get(hour) or self._hour(hour)
        return f"{prefix}{rem // _MIN:02d}:{rem // _SEC % 60:02d}.{rem % _SEC:03d}Z"

    def _bad_ts(self, ms: int) -> str:
        """An unparseable timestamp, kept behind the true one so the line still sorts (see `_Spool`)."""
        self.made["bad_ts"] += 1
        return f"{self._iso(ms)}\x01{_pick(self.r, _BAD_TIMESTAMPS)}"

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
            digits = _BASE62[d] + digits
        id15 = "0038d0" + digits
        suffix = ""
        for chunk in (id15[0:5], id15[5:10], id15[10:15]):
            bits = sum(1 << i for i, c in enumerate(chunk) if c.isupper())
            suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
        return id15 + suffix

    def _user_id(self, index: int) -> str:
        n, out = (index * _UID_MULT + self.uid_offset) % 36**10, ""  # a bijection: unique for every index
        for _ in range(10):
            n, d = divmod(n, 36)
            out += _BASE36[d]
        return "usr_" + out

    def _phone(self, city: _City, landline: bool) -> str:
        """A unique fictional number: 10 NANP digits (555 exchange first), or a spaced UK drama-range one."""
        if city.country != "GB":
            area = _pick(self.r, city.phones)
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
        if x < 0.12 and domain in _TAGGABLE:
            return f"{local}+{_pick(self.r, _TAGS)}@{domain}"
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
    def _address(self, city: _City) -> tuple[str, str, str]:
        r = self.r
        if city.country == "GB":
            street = f"{1 + int(r() * 180)} {_pick(r, _STREETS_GB)} {_pick(r, _SUFFIX_GB)}"
            if r() < 0.25:
                street = f"Flat {1 + int(r() * 24)}, {street}"
            letters = "ABDEFGHJLNPQRSTUWXYZ"
            return (
                street,
                city.name,
                f"{_pick(r, city.prefixes)} {1 + int(r() * 9)}{_pick(r, letters)}{_pick(r, letters)}",
            )
        if city.name in _FRENCH_CITIES:
            street = f"{100 + int(r() * 9900)} {_pick(r, _STREETS_FR)}"
        else:
            street = f"{10 + int(r() * 9990)} {_pick(r, _STREETS_NA)} {_pick(r, _SUFFIX_NA)}"
        if r() < 0.2:
            street += f", Apt {1 + int(r() * 40)}{_pick(r, ('', '', 'A', 'B'))}"
        if city.country == "CA":
            letters = "ABCEGHJKLMNPRSTVWXYZ"
            return (
                street,
                city.name,
                f"{_pick(r, city.prefixes)} {int(r() * 10)}{_pick(r, letters)}{int(r() * 10)}",
            )
        return street, city.name, f"{_pick(r, city.prefixes)}{int(r() * 100):02d}"

    def _fmt_street(self, street: str) -> str:
        x = self.r()
        if x < 0.45:
            return street
        if x < 0.85:  # abbreviated, as typed into the other system
            street = _SUFFIX_RE.sub(lambda m: " " + _SUFFIXES[m.group(1)], street)
            street = street.replace(", Apt ", " #" if x < 0.6 else " Apt ").replace("Saint-", "St-")
            return street.replace("Sainte-", "Ste-").replace("Flat ", "Flat ").replace(", ", " ", 1)
        return street.upper() if x < 0.9 else street.replace(",", "")

    def _new_person(self, index: int, city: _City, last: str | None, age: int | None) -> _Person:
        r, country = self.r, city.country
        p = _Person(index, f"person_{index:0{self.width}d}", country, city)
        female = r() < 0.5
        extra = _EXTRA_FIRST.get(country)
        p.first = _pick(r, extra[female] if extra and r() < 0.3 else _FEMALE if female else _MALE)[0]
        if last is None:
            extra_last = _EXTRA_LAST.get(country)
            last = _pick(r, extra_last if extra_last and r() < 0.3 else _LAST)
        p.last = last
        years = age if age is not None else int(18 + 62 * r() ** 1.3)
        p.birthday = self.today - timedelta(days=int(years * 365.25 + r() * 365))
        p.addr = self._address(city)
        p.mobile = self._phone(city, landline=country == "GB" and r() < 0.35)
        if r() < 0.7:  # employed somewhere with a company email
            k = int(len(_COMPANY_A) * len(_COMPANY_B) * r() ** 2)
            home = "GB" if k % 10 == 3 else "CA" if k % 10 == 7 else "US"
            legal = _LEGAL[home]
            name = f"{_COMPANY_A[k % len(_COMPANY_A)]} {_COMPANY_B[k // len(_COMPANY_A)]}"
            p.company = f"{name} {legal[k % len(legal)]}"
            p.title = int(r() * (len(_TITLES) - 3))
        elif r() < 0.5:
            p.title = len(_TITLES) - 1 - int(r() * 3)  # nurse, student, retired
        p.ip = self._ip(country)
        return p

    def _ip(self, country: str) -> str:
        r = self.r
        return f"{_pick(r, _IP_OCTETS[country])}.{1 + int(r() * 254)}.{int(r() * 256)}.{1 + int(r() * 254)}"

    def _finish_person(self, p: _Person) -> None:
        """Emails, CRM coverage, behaviour and devices, once names and household facts are settled."""
        r = self.r
        first, last = _ascii(p.first).lower(), _ascii(p.last).lower().replace("'", "").replace(" ", "")
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
        p.email = self._claim_email(local, _pick(r, _MAIL_DOMAINS[p.country]))
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
                p.old_addr, p.moved_in = self._address(_pick(r, _CITIES[p.country])), _pick(r, ("sf", "hs"))
            if p.company and r() < 0.06:  # changed jobs: one system still has the old ones
                k = int(r() * len(_COMPANY_A))
                p.old_job = (f"{_COMPANY_A[k]} {_pick(r, _COMPANY_B)} Inc.", int(r() * (len(_TITLES) - 3)))
                p.job_in = _pick(r, ("sf", "hs"))
        x = r()
        p.tier = 2 if x < 0.07 else 1 if x < 0.45 else 0
        p.churned = r() < 0.18
        p.engaged = not p.churned and r() < 0.06
        p.plan = _pick(r, ("free", "free", "plus", "pro") if p.tier else ("free", "free", "free", "plus"))
        if r() < (0.8 if p.in_sf or p.in_hs else 0.55):
            p.user_id = self._user_id(p.index)
            p.subscribed = r() < 0.7
        p.devices = [
            self._device(p, kind, p.ip if i == 0 else self._ip(p.country))
            for i, kind in enumerate(_pick(r, _DEVICE_MIX))
        ]

    def _device(self, p: _Person, kind: str, ip: str) -> _Device:
        r = self.r
        locale = "fr-CA" if p.city.name in _FRENCH_CITIES else f"en-{p.country}"
        tz = _TIMEZONES[(p.country, p.city.tz)]
        if kind == "web":
            lib = '{"name":"analytics.js","version":"next-1.70.0"}'
            pre = f'{{"ip":"{ip}","library":{lib},"locale":"{locale}",'
            post = f'"timezone":"{tz}","userAgent":{_pick(r, _AGENT_JSON)}}}'
            return _Device(kind, self._uuid(), pre, post)
        version, build = _pick(r, _APP_VERSIONS)
        app = f'{{"build":"{build}","name":"{_SHOP}","namespace":"{_APP_ID}","version":"{version}"}}'
        if kind == "ios":
            model, os_version = _pick(r, _IOS)
            idfv = self._uuid(upper=True)
            device = f'{{"id":"{idfv}","manufacturer":"Apple","model":"{model}","type":"ios"}}'
            lib, os_ = (
                '{"name":"analytics-ios","version":"4.1.8"}',
                f'{{"name":"iOS","version":"{os_version}"}}',
            )
            agent = f"HarborPine/{version} CFNetwork/1498.700.2 Darwin/24.1.0"
        else:
            maker, model, os_version, os_build = _pick(r, _ANDROID)
            android_id = f"{self.rng.getrandbits(64):016x}"
            device = f'{{"id":"{android_id}","manufacturer":"{maker}","model":"{model}","type":"android"}}'
            lib, os_ = (
                '{"name":"analytics-android","version":"4.11.3"}',
                f'{{"name":"Android","version":"{os_version}"}}',
            )
            agent = f"Dalvik/2.1.0 (Linux; U; Android {os_version}; {model} Build/{os_build})"
        pre = f'{{"app":{app},"device":{device},"ip":"{ip}","library":{lib},"locale":"{locale}","os":{os_},'
        post = f'"timezone":"{tz}","userAgent":"{agent}"}}'
        return _Device(kind, self._uuid(upper=kind == "ios"), pre, post)

    def _force(self, key: str) -> bool:
        """A fifth of the way in without this hard case yet: make one now (so small sets have it too)."""
        return self.made[key] == 0 and self.seq >= self.forced_at

    def _group(self, start: int) -> list[_Person]:
        """One household, two co-workers sharing a computer, or (mostly) one person."""
        r, left = self.r, self.job.hi - start
        country = _pick(r, _COUNTRIES)
        city = _pick(r, _CITIES[country])
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
                taken = {q.first for q in people} | {n for q in people for n in _NICKS.get(q.first, ())}
                while member.first in taken or (member.first in _NICKS and taken & set(_NICKS[member.first])):
                    member.first = _pick(r, _FEMALE if r() < 0.5 else _MALE)[0]
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
                k = _pick(r, self.common_used)
                self.made["common_repeat"] += 1
            else:
                k = int(r() * len(_COMMON_NAMES))
                if k in self.common_used:
                    self.made["common_repeat"] += 1
                else:
                    self.common_used.append(k)
            person.first, person.last = _COMMON_NAMES[k]
            self.made["common"] += 1
        self._finish_person(person)
        if common and not (person.in_sf or person.in_hs):
            person.in_hs = True  # the collision matters where records are matched
        if common and self.made["common"] <= 2 and self.chunk == 0:
            person.plain = True  # and the first two show it even in a small dataset
        return [person]

    def _share(self, owner: _Person, other: _Person) -> None:
        device = next((d for d in owner.devices if d.kind == "web"), owner.devices[0])
        device.shared = True
        for q in (owner, other):  # both sign in on it with their own accounts
            if q.user_id is None:
                q.user_id = self._user_id(q.index)
        other.devices.append(device)
        self.made["shared"] += 1

    # --------------------------------------------------------------------------------- CRM rows
    def _records(self, p: _Person) -> None:
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

    def _crm_row(self, p: _Person, source: str, dup: bool) -> list[str]:
        r, sf, noisy = self.r, source == "sf", dup or not p.plain
        first, last = p.first, p.last
        if first in _NICKS and r() < 0.12 and noisy:
            first = _pick(r, _NICKS[first])
        if not first.isascii() and r() < 0.5 and noisy:
            first = _ascii(first)
        if not last.isascii() and r() < 0.5 and noisy:
            last = _ascii(last)
        if dup or (r() < 0.05 and noisy):
            if r() < 0.5:
                first = _typo(first, r)
            else:
                last = _typo(last, r)
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
            if city in _CITY_VARIANTS and r() < 0.3:
                city = _pick(r, _CITY_VARIANTS[city])
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
        titles = _TITLES[title] if title is not None else ("",)
        title_text = titles[0] if r() < 0.6 else _pick(r, titles)
        created = datetime.fromtimestamp(self.now_ms // _SEC - 86_400 - int(r() * 4 * 365 * 86_400), UTC)
        if sf:
            country = p.country if r() < 0.7 else _COUNTRY_NAMES[p.country][r() < 0.5]
            birthdate, created_date = bday.isoformat() if bday else "", f"{created:%Y-%m-%dT%H:%M:%S}.000Z"
            return [first, last, email, phone, street, city, post, country, birthdate, company or "",
                    title_text, _pick(r, _LEAD_SOURCES), created_date]  # fmt: skip
        stage = ("Customer" if r() < 0.9 else "Evangelist") if p.tier else _pick(r, _STAGES)
        birthdate = f"{bday.month:02d}/{bday.day:02d}/{bday.year}" if bday else ""
        return [first, last, email, phone, street, city, post, _COUNTRY_NAMES[p.country][0], birthdate,
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
        first = (self.start_ms // _DAY + 1) * _DAY
        tuesday = first + (5 - first // _DAY % 7) % 7 * _DAY + 15 * _HOUR  # 1970-01-01 was a Thursday
        sends = [(ms, f"Weekly Picks - {datetime.fromtimestamp(ms // _SEC, UTC):%b %d}")
                 for ms in range(tuesday, self.now_ms, 7 * _DAY)]  # fmt: skip
        for name in _PROMOS:
            at = self.start_ms + (_DAY + int(rng.random() * (WINDOW_DAYS - 1) * _DAY)) // _HOUR * _HOUR
            sends.append((at, name))
        return [(ms, f"cmp_{4100 + i}", _dumps(name)) for i, (ms, name) in enumerate(sorted(sends))]

    def _local_start(self, p: _Person, days_ago: float) -> int:
        """A session start that many days ago, at a plausible local hour (evenings are busiest)."""
        ms, off = self.now_ms - int(days_ago * _DAY), p.city.tz * _HOUR
        t = (ms + off) // _DAY * _DAY - off + _pick(self.r, _LOCAL_HOURS) * _HOUR + int(self.r() * _HOUR)
        if t > self.now_ms - 5 * _MIN:
            t -= _DAY
        return t + _DAY if t < self.start_ms + _MIN else t

    def _activity(self, p: _Person) -> None:
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
            starts += [(self.now_ms - _HOUR * 46 + int(r() * 45 * _HOUR), True) for _ in range(bursts)]
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
        self, p: _Person, d: _Device, t: int, burst: bool, may_login: bool, must: bool, first_id: bool
    ) -> tuple[int, int]:
        """One visit: landing, maybe sign-in, search, product views, cart, checkout, order."""
        r, now, log, bits, cache = self.r, self.now_ms, math.log, self.rng.getrandbits, self.hour_cache
        hours, truth, tail, first_hour = self.spool.hours, self.spool.truth, f",{p.entity}\n", self.first_hour
        web, ios, cur, pre, post = d.kind == "web", d.kind == "ios", _CURRENCY[p.country][0], d.pre, d.post
        uid = None if d.shared else d.uid
        ids = f'"userId":"{uid}",{d.anon_ids}' if uid else d.anon_ids
        page, app_ctx, identified = _HOME, pre + post, 0
        bad_rate = 1.0 if self._force("bad_ts") else _BAD_TS_RATE  # share of unparseable timestamps

        def out(typ: str, body: str) -> None:
            nonlocal t, bad_rate
            t += int(2500 - 30000 * log(1.0 - r()))
            if t > now:
                return  # still going on "now": the rest has not happened yet
            mid = f"ajs-next-{bits(128):032x}" if web else self._uuid(ios)
            hour, rem = divmod(t, _HOUR)
            if typ != "identify" and r() < bad_rate:
                ts, bad_rate = self._bad_ts(t), _BAD_TS_RATE
            else:
                prefix = cache.get(hour) or self._hour(hour)
                ts = f"{prefix}{rem // _MIN:02d}:{rem // _SEC % 60:02d}.{rem % _SEC:03d}Z"
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
            bad = r() < _BAD_RATE or self._force("bad_email")  # for the data-quality report
            self.made["bad_email"] += bad
            traits = {"email": self._fmt_email(email, bad), "first_name": p.first, "last_name": p.last}
            if p.first in _NICKS and r() < 0.2:
                traits["first_name"] = _pick(r, _NICKS[p.first])
            if r() < 0.4:
                traits["phone"] = self._fmt_phone(p.mobile, p.country)
            if r() < 0.8:
                traits["plan"] = p.plan
            ids = f'"userId":"{p.user_id}",{d.anon_ids}'
            out("identify", f'"traits":{_dumps(traits)}')
            if not d.shared:
                d.uid = p.user_id
            if first_id and not identified and r() < 0.4:
                track("Signed Up", f'{{"method":"{_pick(r, ("email", "email", "google", "apple"))}"}}')
            identified = identified or t

        x = r()
        if web:
            if x < 0.45:
                name, landing = "Home", _HOME
            elif x < 0.75:
                name, landing = "Product Detail", _pick(r, _PRODUCTS).page
            elif x < 0.9:
                name, landing = "Category", _CATEGORY_PAGES[_pick(r, _PRODUCTS).category]
            else:
                name, landing = "Search", _SEARCH_PAGES[_pick(r, _QUERIES)]
            referrer = _pick(r, _REFERRERS)
            view(name, f'{landing[:-1]},"referrer":"{referrer}"}}' if referrer else landing, "")
        else:
            track("Application Opened", f'{{"from_background":{"true" if x < 0.5 else "false"}}}')
            view("Home", "", "{}")
        # Every session on a shared device starts signed out; elsewhere people sign in, or now and then again.
        login = (must or r() < 0.85) if d.shared else r() < (0.05 if uid else 0.6)
        if may_login and login:
            identify()
        if r() < 0.25:
            query = _pick(r, _QUERIES)
            view("Search", _SEARCH_PAGES[query], _SEARCH_PROPS[query])
            track("Products Searched", _SEARCH_PROPS[query])
        pool = _PRICEY if p.tier == 2 and r() < 0.8 else _CHEAP if r() < 0.5 else _PRODUCTS
        seen = [_pick(r, pool) for _ in range(5 + int(r() * 8) if burst else 1 + int(-log(1.0 - r()) * 0.9))]
        for product in seen:
            view("Product Detail", product.page, product.screen)
            track("Product Viewed", product.viewed[cur])
        if r() >= (0.06, 0.35, 0.6)[p.tier] * (0.3 if burst else 1.0):
            return t, identified
        cart_id, basket = f"{bits(64):016x}", []
        items = 2 + int(r() * 3) if p.tier == 2 else 1 + (r() < 0.3)  # high-value people fill the cart
        for product in (seen + [_pick(r, pool) for _ in range(items)])[:items]:
            qty = 1 + int(r() * 3) if p.tier == 2 else 1 if r() < 0.85 else 2
            basket.append({**product.props[cur], "quantity": qty})
            track("Product Added", f'{product.viewed[cur][:-1]},"cart_id":"{cart_id}","quantity":{qty}}}')
        if r() < 0.6:
            view("Cart", _CART, "{}")
            track("Cart Viewed", _dumps({"cart_id": cart_id, "products": basket}))
        if r() >= (0.3, 0.6, 0.8)[p.tier]:
            return t, identified
        if may_login and ids == d.anon_ids and r() < 0.7:
            identify()  # signs in at checkout
        self.order_next += 1 + int(r() * 40)
        order_id = f"HP{self.order_next}"
        revenue = round(sum(item["price"] * item["quantity"] for item in basket), 2)
        view("Checkout", _CHECKOUT, "{}")
        track(
            "Checkout Started",
            _dumps({"order_id": order_id, "value": revenue, "currency": cur, "products": basket}),
        )
        if r() < 0.15:
            return t, identified  # abandoned at checkout
        order: dict[str, Any] = {"order_id": order_id, "affiliation": f"{_SHOP} {'Online' if web else 'App'}"}
        if r() < 0.15:
            order["coupon"], order["discount"] = (
                _pick(r, ("FALL10", "WELCOME10", "MEMBER10")),
                round(revenue * 0.1, 2),
            )
            revenue = round(revenue * 0.9, 2)
        shipping = 0.0 if revenue >= 75 else {"USD": 7.95, "GBP": 4.95, "CAD": 9.95}[cur]
        if cur == "GBP":  # prices include VAT
            tax, total = round(revenue - revenue / 1.2, 2), round(revenue + shipping, 2)
        else:
            tax = round(revenue * (0.13 if cur == "CAD" else 0.0825), 2)
            total = round(revenue + shipping + tax, 2)
        if r() < _BAD_RATE or self._force("bad_revenue"):
            revenue = -revenue  # a refund logged as an order: bad data for the quality report
            self.made["bad_revenue"] += 1
        order.update(total=total, revenue=revenue, shipping=shipping, tax=tax, currency=cur, products=basket)
        track("Order Completed", _dumps(order))
        view("Order Confirmation", _CONFIRM, f'{{"order_id":"{order_id}"}}')
        return t, identified

    def _emails(self, p: _Person, since: int, until: int) -> None:
        """Server-side email events (by userId only) for campaigns sent after the person signed up."""
        r, hours, truth, tail = self.r, self.spool.hours, self.spool.truth, f",{p.entity}\n"
        head = f'"userId":"{p.user_id}","event":"'
        ctx = '"context":{"library":{"name":"analytics-python","version":"2.3.3"}}'
        opens = (0.2, 0.35, 0.5)[p.tier] + (0.2 if p.engaged else 0.0)

        def out(t: int, event: str, props: str) -> bool:
            if t > until:
                return False  # not happened yet (or after the person left)
            mid = self._uuid()
            ts = self._iso(t) if r() >= _BAD_TS_RATE else self._bad_ts(t)
            line = f'{{"timestamp":"{ts}","type":"track","messageId":"{mid}",{head}{event}",'
            hours[t // _HOUR - self.first_hour].append(f'{line}"properties":{{{props}}},{ctx}}}\n')
            truth.append(mid + tail)
            return True

        for send, campaign, name in self.campaigns:
            if send > until:
                break
            if send < since or r() < 0.55:
                continue
            email_id = f"eml_{self.rng.getrandbits(64):016x}"
            base = f'"email_id":"{email_id}","campaign_id":"{campaign}","campaign_name":{name}'
            t = send + int(r() * 20 * _MIN)
            if not out(t, "Email Delivered", base):
                break
            if r() < opens:
                t += int(-math.log(1.0 - r()) * 6 * _HOUR)
                if out(t, "Email Opened", base) and r() < 0.25:
                    utm = f"utm_source=newsletter&utm_medium=email&utm_campaign={campaign}"
                    link = f'"link_url":"{_SITE}/?{utm}"'
                    out(t + 5000 + int(r() * 180_000), "Email Link Clicked", f"{base},{link}")
                continue
            unsubscribes = r() < 0.02 or self._force("unsubscribed")
            if unsubscribes and out(t + int(r() * 2 * _DAY), "Unsubscribed", base):
                self.made["unsubscribed"] += 1
                return  # and no more campaigns

    # ------------------------------------------------------------------------------------ output
    def run(self, progress: Callable[[int], None] | None) -> tuple[int, int, _Blocks]:
        """Generate this chunk's people; answer (records, events, where its event buckets are). The only
        chunk writes the final files; one of several writes parts (`c00001-...`) for `_merge`."""
        job, single = self.job, self.job.chunks == 1
        prefix = "" if single else f"c{job.chunk:05d}-"
        paths = [job.out / f"{prefix}{name}" for name in _NAMES[:2] + _NAMES[3:5]]
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
                for fh, header in zip((sf, hs, truth_records, truth_events), _HEADERS, strict=True):
                    fh.write(",".join(header) + "\n")
            spill_file = Path(tmp) / f"c{job.chunk:05d}-events"
            self.spool = _Spool(truth_events, self.first_hour, spill_file)
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
                    events = self.spool.finish(job.out / _NAMES[2])
                else:
                    self.spool.spill()
                    events = self.spool.count
            finally:
                self.spool.close()
        if progress is not None and pending:
            progress(pending)
        return self.records, events, self.spool.blocks


_NAMES = ("salesforce_contacts.csv", "hubspot_contacts.csv", "events.ndjson", "truth_records.csv",
          "truth_events.csv", "manifest.json")  # fmt: skip
_HEADERS = (SALESFORCE_HEADER, HUBSPOT_HEADER, ["source", "external_id", "entity"], ["message_id", "entity"])
_CHUNK_PEOPLE = 25_000  # people per independently seeded chunk; fixed, so output never depends on CPUs
_BUCKET_HOURS = 6  # spilled events are sorted 6 hours at a time ...
_HOURLY_BUCKETS = 7 * 24  # ... or an hour at a time in the last week, where most of them are


def _pool(workers: int) -> ProcessPoolExecutor | None:
    """Worker processes, forked: only where that is safe (POSIX, no other threads); else run in-process."""
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def _done(result: tuple[int, int, _Blocks]) -> Future[tuple[int, int, _Blocks]]:
    future: Future[tuple[int, int, _Blocks]] = Future()
    future.set_result(result)
    return future


def _merge(work: Path, output: Path, blocks: list[_Blocks], pool: Executor | None, tasks: int) -> None:
    """Concatenate the chunks' CRM and truth parts in order, and sort the event buckets into one file."""
    for name, header in zip(_NAMES[:2] + _NAMES[3:5], _HEADERS, strict=True):
        with open(output / name, "wb") as out:
            out.write((",".join(header) + "\n").encode())
            for chunk in range(len(blocks)):
                part = work / f"c{chunk:05d}-{name}"
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                part.unlink()
    buckets: dict[int, list[tuple[Path, int, int, int]]] = {}
    for chunk, chunk_blocks in enumerate(blocks):
        path = work / f"c{chunk:05d}-events"
        for bucket, spilled in chunk_blocks.items():
            buckets.setdefault(bucket, []).extend((path, *block) for block in spilled)
    total, done = _size(list(buckets.items())), 0
    plans: list[_Plan] = []
    for bucket, parts in sorted(buckets.items()):  # contiguous runs of buckets of about equal size
        if not plans or done >= total * len(plans) / tasks:
            plans.append([])
        plans[-1].append((bucket, parts))
        done += _size([(bucket, parts)])
    starts = [sum(_size(plan) for plan in plans[:i]) for i in range(len(plans))]
    events = output / _NAMES[2]
    with open(events, "wb") as out:
        out.truncate(total)
    written = (pool.map if pool is not None else map)(_sort_buckets, plans, [events] * len(plans), starts)
    if sum(written) != total:
        raise RuntimeError(f"merging the event buckets wrote {sum(written)} bytes, expected {total}")


def _generate(
    output: Path, customers: int, seed: int, now: datetime, progress: Callable[[int], None] | None,
    chunk_people: int = _CHUNK_PEOPLE, workers: int | None = None,
) -> DemoSummary:  # fmt: skip
    now_ms = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)  # exact, unlike floats
    chunks = -(-customers // chunk_people)
    files = {name.split(".")[0]: output / name for name in _NAMES}
    if chunks == 1:
        job = _Job(output, customers, seed, now_ms, 0, 1, 0, customers)
        records, events, _ = _Generator(job).run(progress)
    else:
        if workers is None:
            workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        workers = max(1, min(workers, chunks))
        with tempfile.TemporaryDirectory(prefix=".demo-", dir=output) as tmp:
            work = Path(tmp)
            bounds = [(c * chunk_people, min(customers, (c + 1) * chunk_people)) for c in range(chunks)]
            jobs = [_Job(work, customers, seed, now_ms, c, chunks, *bound) for c, bound in enumerate(bounds)]
            pool = _pool(workers)
            try:
                if pool is None:
                    futures = [_done(_run_job(job)) for job in jobs]
                else:
                    futures = [pool.submit(_run_job, job) for job in jobs]
                held = 0  # the last chunk is reported once the merge is done too
                for count, future in enumerate(as_completed(futures), 1):
                    job = jobs[futures.index(future)]
                    if progress is not None and count < chunks:
                        progress(job.hi - job.lo)
                    held = job.hi - job.lo
                results = [future.result() for future in futures]
                _merge(work, output, [blocks for *_, blocks in results], pool, 4 * workers)
            finally:
                if pool is not None:
                    pool.shutdown()
        if progress is not None:
            progress(held)
        records, events = sum(r[0] for r in results), sum(r[1] for r in results)
    manifest = {
        "generated_at": f"{now.astimezone(UTC):%Y-%m-%dT%H:%M:%S}.{now_ms % 1000:03d}Z", "seed": seed,
        "customers": customers, "records": records, "events": events,
        "files": [
            {"path": _NAMES[0], "kind": "records", "format": "csv", "source": "salesforce",
             "id_column": "Id", "map": dict(zip(SALESFORCE_HEADER[1:12], _FIELDS, strict=True))},
            {"path": _NAMES[1], "kind": "records", "format": "csv", "source": "hubspot",
             "id_column": "Record ID", "map": dict(zip(HUBSPOT_HEADER[1:12], _FIELDS, strict=True))},
            {"path": _NAMES[2], "kind": "events", "format": "ndjson"},
        ],
        "truth": {"records": _NAMES[3], "events": _NAMES[4]},
    }  # fmt: skip
    files["manifest"].write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return DemoSummary(output, customers, records, events, files)


def generate(
    output: Path,
    customers: int = 200,
    seed: int = 42,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Write a synthetic dataset of `customers` people into `output` (created if missing).

    `now` (default: the current UTC time) ends the 120-day event window; a naive datetime is read as UTC.
    `progress(n)` is called with the number of customers completed since the previous call. The same
    seed, `now` and `customers` give byte-identical files (whatever the number of CPUs).
    """
    if isinstance(customers, bool) or not isinstance(customers, int) or customers < 1:
        raise ValueError(f"customers must be a whole number of at least 1, got {customers!r}")
    now = datetime.now(UTC) if now is None else now if now.tzinfo else now.replace(tzinfo=UTC)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    return _generate(output, customers, seed, now.astimezone(UTC), progress)
