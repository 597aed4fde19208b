"""What a message or a CRM record tells the identity graph: identifiers seen together, attributes."""

from __future__ import annotations

from typing import Any

from cdp import normalize, record_ids
from cdp.identity import names
from cdp.identity.graph import Observation


def _traits(msg: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    traits = msg.get("traits")
    if isinstance(traits, dict):
        found.append(traits)
    context = msg.get("context")
    if isinstance(context, dict) and isinstance(context.get("traits"), dict):
        found.append(context["traits"])
    return found


def from_message(
    msg: dict[str, Any],
    user_id: str | None,
    anonymous_id: str | None,
    previous_id: str | None,
    origin: str,
    when: str,
) -> Observation:
    """Identifiers of a (validated, normalised) Segment message."""
    identifiers: list[tuple[str, str]] = []
    if user_id:
        identifiers.append(("user_id", user_id))
    if anonymous_id:
        identifiers.append(("anonymous_id", anonymous_id))
    attributes: list[tuple[str, str]] = []
    for traits in _traits(msg):
        email = traits.get("email")
        if isinstance(email, str) and email:
            identifiers.append(("email", email))
        phone = traits.get("phone")
        if isinstance(phone, str) and phone:
            identifiers.append(("phone", phone))
        birthday = traits.get("birthday")
        if isinstance(birthday, str) and birthday:
            attributes.append(("birthday", birthday))
        first = names.clean(traits.get("first_name") or traits.get("firstName"))
        if first:
            attributes.append(("first_name", first))
    context = msg.get("context")
    if isinstance(context, dict) and isinstance(context.get("externalIds"), list):
        for ext in context["externalIds"]:
            if isinstance(ext, dict) and normalize.text(ext.get("id")) and normalize.text(ext.get("type")):
                identifiers.append(("external_id", f"{normalize.text(ext['type'])}:{normalize.text(ext['id'])}"))
    alias = False
    touch = bool(_traits(msg))
    if previous_id:
        # previousId is an earlier anonymous id or user id; an alias joins it with userId.
        identifiers.append(("previous_id", previous_id))
        alias = True
    return Observation(identifiers, origin, when, attributes, alias, touch)


def from_record(
    source: str,
    external_id: str,
    email: str | None,
    phone: str | None,
    first_name: str | None,
    birthday: str | None,
    when: str,
) -> Observation:
    identifiers = [("record", record_ids.value(source, external_id))]
    if email:
        identifiers.append(("email", email))
    if phone:
        identifiers.append(("phone", phone))
    attributes = []
    if birthday:
        attributes.append(("birthday", birthday))
    first = names.clean(first_name)
    if first:
        attributes.append(("first_name", first))
    return Observation(identifiers, record_ids.key(source, external_id), when, attributes, touch=True)
