"""The demo's vocabulary and constants: names and nicknames, cities, streets, companies, titles, time units."""

from __future__ import annotations

import re
from dataclasses import dataclass

SALESFORCE_HEADER = [
    "Id", "FirstName", "LastName", "Email", "Phone", "MailingStreet", "MailingCity", "MailingPostalCode",
    "MailingCountry", "Birthdate", "Account Name", "Title", "LeadSource", "CreatedDate",
]  # fmt: skip


HUBSPOT_HEADER = [
    "Record ID", "First Name", "Last Name", "Email", "Phone Number", "Street Address", "City", "Postal Code",
    "Country/Region", "Date of Birth", "Company Name", "Job Title", "Lifecycle Stage",
]  # fmt: skip


FIELDS = [
    "first_name", "last_name", "email", "phone", "address.street", "address.city", "address.postal_code",
    "address.country", "birthday", "company", "title",
]  # fmt: skip


WINDOW_DAYS = 120  # every event falls in the 120 days before `now`


SEC, MIN, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000


SPILL_LINES = 100_000  # event lines buffered before they are spilled to the bucket files


BAD_RATE = 0.01  # invalid identify emails, negative revenues


BAD_TS_RATE = 0.003  # unparseable timestamps, of all events


BAD_TIMESTAMPS = (
    "Invalid Date",
    "NaN",
    "undefined",
    "2026-13-45T25:61:00Z",
    "0000-00-00 00:00:00",
    "yesterday",
)


# ---------------------------------------------------------------------------------------------- pools
def words(text: str, sep: str | None = None) -> list[str]:
    return [word.strip() for word in text.split(sep)]


def _names(spec: str) -> list[tuple[str, tuple[str, ...]]]:
    """'Robert:Bob,Rob Mary' -> [("Robert", ("Bob", "Rob")), ("Mary", ())]."""
    out = []
    for token in spec.split():
        name, _, nicks = token.partition(":")
        out.append((name, tuple(nicks.split(",")) if nicks else ()))
    return out


MALE = _names(
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


FEMALE = _names(
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


EXTRA_FIRST = {  # (male, female) names more common in that country
    "GB": (
        _names("Callum Rhys Hamish Alistair:Ali Declan Oliver:Ollie Harry Alfie Rory Gareth"),
        _names("Siobhan Aoife Niamh Imogen:Immy Harriet:Hattie Freya Poppy Eilidh"),
    ),
    "CA": (
        _names("François Étienne Jean-François Mathieu:Matt Luc Gabriel:Gabe Félix"),
        _names("Geneviève:Gen Émilie Amélie Josée Marie-Ève Camille Mélanie"),
    ),
}


NICKS = {name: nicks for pool in (MALE, FEMALE) for name, nicks in pool if nicks} | {
    name: nicks for pair in EXTRA_FIRST.values() for pool in pair for name, nicks in pool if nicks
}


LAST = words(
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


EXTRA_LAST = {
    "GB": words(
        "Davies Evans Hughes Clarke Ahmed Khan Ali Singh Hussain MacLeod McKenzie Fitzgerald Byrne "
        "Whitfield Pemberton Ashworth"
    ),
    "CA": words(
        "Tremblay Gagnon Roy Côté Bouchard Gauthier Morin Lavoie Fortin Gagné Ouellet Pelletier Bélanger "
        "Lévesque Bergeron Leblanc Girard Simard Boucher MacDonald"
    ),
}


# Very common full names that several unrelated people share (different birthdays, addresses, emails).
COMMON_NAMES = [
    (first, last)
    for first, last in (
        name.split()
        for name in words(
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


FRENCH_CITIES = {"Montréal", "Québec City"}


CITY_VARIANTS = {
    "New York": ("New York City", "NYC", "new york"), "Montréal": ("Montreal",),
    "St. Louis": ("Saint Louis",), "Québec City": ("Quebec City", "Québec"),
    "Newcastle upon Tyne": ("Newcastle",), "Brooklyn": ("New York",),
}  # fmt: skip


@dataclass(frozen=True)
class City:
    country: str
    name: str
    prefixes: tuple[str, ...]
    phones: tuple[str, ...]  # NANP area codes; for GB the one Ofcom drama-range landline prefix, if any
    tz: int


def _cities(country: str) -> list[City]:
    out = []
    for spec in _CITY_SPECS[country].replace("\n", ";").split(";"):
        name, prefixes, phones, weight, tz = spec.strip().split("|")
        phone_list = () if phones == "-" else (phones,) if country == "GB" else tuple(phones.split())
        out += [City(country, name, tuple(prefixes.split()), phone_list, int(tz))] * int(weight)
    return out


CITIES = {country: _cities(country) for country in _CITY_SPECS}


COUNTRIES = ["US"] * 78 + ["GB"] * 12 + ["CA"] * 10


COUNTRY_NAMES = {"US": ("United States", "USA"), "GB": ("United Kingdom", "UK"), "CA": ("Canada", "Canada")}


TIMEZONES = {
    ("US", -5): "America/New_York", ("US", -6): "America/Chicago", ("US", -7): "America/Denver",
    ("US", -8): "America/Los_Angeles", ("GB", 0): "Europe/London", ("CA", -5): "America/Toronto",
    ("CA", -8): "America/Vancouver", ("CA", -7): "America/Edmonton", ("CA", -6): "America/Winnipeg",
    ("CA", -4): "America/Halifax",
}  # fmt: skip


STREETS_NA = words(
    "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Sunset Lincoln Jackson Franklin Highland Church "
    "Mill River Spring Valley Willow Chestnut Walnut Madison Jefferson Cherry Forest Meadow Ridge Birch "
    "Hickory Lakeview Magnolia Dogwood Sycamore Harbor Orchard Prospect Union Summit"
)


STREETS_GB = words(
    "High Station Church Victoria Park London Mill Queen's King's Manor Green School Albert Grove Richmond "
    "Clarence Windsor York Springfield Chapel Orchard Meadow Beech"
)


STREETS_FR = words(
    "rue Saint-Denis|rue Sherbrooke Ouest|boulevard René-Lévesque|avenue du Parc|rue Sainte-Catherine|"
    "avenue Papineau|rue Notre-Dame|chemin de la Côte-Sainte-Catherine|rue Saint-Jean|avenue Laurier",
    "|",
)


SUFFIXES = {
    "Street": "St", "Avenue": "Ave", "Road": "Rd", "Drive": "Dr", "Lane": "Ln", "Boulevard": "Blvd",
    "Court": "Ct", "Place": "Pl", "Close": "Cl", "Crescent": "Cres", "Gardens": "Gdns", "Terrace": "Ter",
    "Grove": "Gr",
}  # fmt: skip


SUFFIX_RE = re.compile(r" (" + "|".join(SUFFIXES) + r")\b")


SUFFIX_NA = ["Street"] * 4 + ["Avenue"] * 3 + words("Road Drive Drive Lane Boulevard Court Place Way")


SUFFIX_GB = ["Road"] * 4 + ["Street"] * 3 + words("Lane Close Avenue Crescent Gardens Terrace Grove")


COMPANY_A = words(
    "Bluefin Brightline Cobalt Summit Redwood Ironclad Lumina Harborview Evergreen Pioneer Silverline Atlas "
    "Keystone Granite Beacon Horizon Cascade Meridian Vertex Sterling Crescent Orchard Falcon Juniper Nimbus "
    "Polaris Sequoia Tidewater Copperleaf Northstar Ember Bramble Kestrel Alder Larkspur Fernhill Saltmarsh "
    "Driftwood Oakridge Willowbrook"
)


COMPANY_B = words(
    "Analytics Labs Logistics Health Software Partners Capital Foods Media Robotics Energy Systems "
    "Consulting Retail Insurance Studios Biotech Networks Architects Outfitters"
)


LEGAL = {"US": ("Inc.", "LLC", "Corp.", "Inc."), "GB": ("Ltd", "Ltd", "PLC"), "CA": ("Inc.", "Ltd.")}


# Job titles, each with the variants people type (abbreviated, reordered, non-English). The last three are
# for people without an employer.
TITLES = [
    tuple(variants.split("|"))
    for variants in words(
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


LEAD_SOURCES = ["Web"] * 5 + words("Phone Inquiry|Partner Referral|Trade Show|Advertisement|Other|", "|")


STAGES = words("Subscriber|Lead|Lead|Marketing Qualified Lead|Sales Qualified Lead|Opportunity|Other", "|")


_MAIL = {
    "US": "gmail.com*8 yahoo.com*3 outlook.com*2 hotmail.com*2 icloud.com*2 aol.com proton.me comcast.net",
    "GB": "gmail.com*6 hotmail.co.uk*3 yahoo.co.uk*2 outlook.com*2 btinternet.com*2 icloud.com sky.com",
    "CA": "gmail.com*7 hotmail.com*2 yahoo.ca*2 outlook.com*2 icloud.com shaw.ca rogers.com videotron.ca",
}


MAIL_DOMAINS = {
    country: [d.partition("*")[0] for d in spec.split() for _ in range(int(d.partition("*")[2] or 1))]
    for country, spec in _MAIL.items()
}


TAGGABLE = {"gmail.com", "outlook.com", "icloud.com", "proton.me", "hotmail.com"}


TAGS = ("shop", "orders", "harbor", "promo", "news")


IP_OCTETS = {"US": (24, 47, 67, 68, 71, 73, 75, 76, 96, 98, 107, 174), "GB": (2, 31, 81, 82, 86, 90, 109),
              "CA": (24, 70, 142, 184)}  # fmt: skip


BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


UID_MULT = 2_654_435_761  # prime, so index -> index * UID_MULT mod 36**10 is a bijection


DEVICE_MIX = [("web",)] * 12 + [("ios",), ("ios",), ("android",), ("web", "android")]


DEVICE_MIX += [("web", "ios")] * 2 + [("web", "web")] * 2  # ("web", "web"): a laptop and a phone browser


NAMES = ("salesforce_contacts.csv", "hubspot_contacts.csv", "events.ndjson", "truth_records.csv",
          "truth_events.csv", "manifest.json")  # fmt: skip


HEADERS = (SALESFORCE_HEADER, HUBSPOT_HEADER, ["source", "external_id", "entity"], ["message_id", "entity"])


BUCKET_HOURS = 6  # spilled events are sorted 6 hours at a time ...


HOURLY_BUCKETS = 7 * 24  # ... or an hour at a time in the last week, where most of them are
