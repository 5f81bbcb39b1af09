"""The audience query's columns (connector.audience_query.resolve_columns): config names against the
columns the query reports, with the connector's ConfigError (file, key, hint) for a mistake."""

from __future__ import annotations

import pytest

from connector.audience_ids import IdentifierHasher
from connector.audience_query import resolve_columns
from connector.errors import ConfigError

COLUMNS = ["CUSTOMER_ID", "EMAIL", "PHONE", "IDFA"]


def test_names_match_case_insensitively_and_identifiers_take_the_stable_order() -> None:
    spec = resolve_columns("vip", "customer_id", {"phone": "phone", "idfa": "IDFA", "email": "Email"}, COLUMNS,
                           IdentifierHasher("US"), device_id_hash="md5", kinds=["int", "text", "text", "text"])
    assert spec.member_id == "CUSTOMER_ID"
    assert spec.identifiers == (("EMAIL_SHA256", "EMAIL"), ("PHONE_SHA256", "PHONE"), ("IDFA_MD5", "IDFA"))
    assert spec.id_schema == ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_MD5")
    assert spec.hashing()(("A@B.co", "2133734253", None)) == (
        resolve_columns("x", "customer_id", {"email": "email"}, COLUMNS).hasher.hash("EMAIL_SHA256", "a@b.co"),
        IdentifierHasher("US").hash("PHONE_SHA256", "2133734253"), None, None, None, None)


@pytest.mark.parametrize(("member_id", "identifiers", "kinds", "where", "message"), [
    ("customer", {"email": "email"}, None, "audiences.vip.member_id", "did you mean 'CUSTOMER_ID'"),
    ("customer_id", {"email": "mail"}, None, "audiences.vip.identifiers.email", "the query has no column 'mail'"),
    ("customer_id", {"twitter": "email"}, None, "audiences.vip.identifiers.twitter", "use email, phone, idfa or gaid"),
    ("customer_id", {}, None, "audiences.vip.identifiers", "map at least one of email, phone, idfa, gaid"),
    ("customer_id", {"email": "email"}, ["float", "text", "text", "text"], "audiences.vip.member_id",
     "cast it to an integer or a string"),
])
def test_mistakes_name_the_key_and_what_to_do(member_id: str, identifiers: dict[str, str], kinds: list[str] | None,
                                              where: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        resolve_columns("vip", member_id, identifiers, COLUMNS, kinds=kinds)
    assert e.value.where == f"connector.yml: {where}"
