"""The demo shop: its catalogue, pages, search terms, user agents and devices."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from cdp.demo.pools import words

# ----------------------------------------------------------------------------------------- the shop
SITE, SHOP, APP_ID = "https://harborandpine.shop", "Harbor & Pine", "com.harborandpine.app"


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


CURRENCY = {"US": ("USD", 1.0), "GB": ("GBP", 0.79), "CA": ("CAD", 1.37)}


QUERIES = words(
    "rain jacket|tent|merino|hiking boots|sleeping bag|gift for dad|coffee kettle|duvet|socks|headlamp|"
    "backpack|sleping bag|wool blanket|cast iron|vest|trail runners size 10",
    "|",
)


REFERRERS = ["", "", "", "https://www.google.com/", "https://www.google.com/", "https://www.google.com/",
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


IOS = (("iPhone15,2", "17.6.1"), ("iPhone15,4", "18.0.1"), ("iPhone16,1", "18.1"), ("iPhone14,5", "17.5"))


ANDROID = (
    ("Google", "Pixel 8", "14", "AP2A.240905.003"), ("samsung", "SM-S921U", "14", "UP1A.231005.007"),
    ("samsung", "SM-A546B", "13", "TP1A.220624.014"), ("OnePlus", "CPH2581", "14", "UKQ1.230924.001"),
)  # fmt: skip


APP_VERSIONS = (("3.4.1", "341"), ("3.5.0", "350"), ("3.3.2", "332"))


PROMOS = words(
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


LOCAL_HOURS = [hour for hour, weight in enumerate(_HOUR_WEIGHTS) for _ in range(weight)]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


AGENT_JSON = [dumps(agent) for agent in _AGENTS]


def ascii(text: str) -> str:
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
            for currency, rate in CURRENCY.values():
                price = float(usd) if currency == "USD" else round(float(usd) * rate) - 0.01
                props[currency] = {**base, "price": price, "currency": currency}
            page = dumps({"path": f"/products/{slug}", "title": f"{name} | {SHOP}", "url": f"{SITE}/products/{slug}"})
            viewed = {currency: dumps(p) for currency, p in props.items()}
            screen = dumps({"product_id": product_id, "name": name})
            out.append(_Product(name, category, float(usd), props, viewed, page, screen))
    return out


PRODUCTS = _catalog()


CHEAP = [p for p in PRODUCTS if p.usd < 100]


PRICEY = [p for p in PRODUCTS if p.usd >= 90]


def _static_page(path: str, title: str) -> str:
    return dumps({"path": path, "title": f"{title} | {SHOP}", "url": SITE + path})


HOME = _static_page("/", "Outdoor & Home Goods")


CART = _static_page("/cart", "Your Cart")


CHECKOUT = _static_page("/checkout", "Checkout")


CONFIRM = _static_page("/checkout/confirmation", "Thank you")


CATEGORY_PAGES = {p.category: _static_page(f"/c/{p.category.lower()}", p.category) for p in PRODUCTS}


SEARCH_PAGES = {
    q: dumps({"path": "/search", "search": "?q=" + q.replace(" ", "+"), "title": f"Search: {q} | {SHOP}",
               "url": f"{SITE}/search?q={q.replace(' ', '+')}"})
    for q in QUERIES
}  # fmt: skip


SEARCH_PROPS = {q: dumps({"query": q}) for q in QUERIES}


SLIPS = {"i": "y", "y": "i", "e": "a", "a": "e", "o": "u", "u": "o", "s": "z", "c": "k", "n": "m", "m": "n"}
