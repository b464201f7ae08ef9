"""Known-answer and property tests of the TOP signature."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.gateway.sign import CanonicalTemplate, Signer, canonical_string, sign, verify

# The official example (API call guide, docId 101617).
OFFICIAL = {
    "method": "taobao.item.seller.get",
    "app_key": "12345678",
    "session": "test",
    "timestamp": "2016-01-01 12:00:00",
    "format": "json",
    "v": "2.0",
    "sign_method": "md5",
    "fields": "num_iid,title,nick,price,num",
    "num_iid": "11223344",
}
OFFICIAL_CANONICAL = (
    "app_key12345678fieldsnum_iid,title,nick,price,numformatjsonmethodtaobao.item.seller.get"
    "num_iid11223344sessiontestsign_methodmd5timestamp2016-01-01 12:00:00v2.0"
)


def test_official_md5_vector() -> None:
    assert canonical_string(OFFICIAL) == OFFICIAL_CANONICAL
    assert sign(OFFICIAL, "helloworld", "md5") == "66987CB115214E59E6EC978214934FB8"


@pytest.mark.parametrize(
    ("method", "digestmod"),
    [("hmac", hashlib.md5), ("hmac-sha256", hashlib.sha256)],
    ids=["hmac-md5", "hmac-sha256"],
)
def test_hmac_vectors_computed_independently(method: str, digestmod: Any) -> None:
    params = {**OFFICIAL, "sign_method": method}
    canonical = OFFICIAL_CANONICAL.replace("sign_methodmd5", f"sign_method{method}")
    expected = hmac.new(b"helloworld", canonical.encode("utf-8"), digestmod).hexdigest().upper()
    assert sign(params, "helloworld", method) == expected


def test_md5_is_secret_wrapped_digest() -> None:
    data = ("helloworld" + OFFICIAL_CANONICAL + "helloworld").encode()
    expected = hashlib.md5(data, usedforsecurity=False).hexdigest().upper()
    assert sign(OFFICIAL, "helloworld", "md5") == expected


def test_canonical_sorts_by_byte_value_and_drops_sign_and_empty_values() -> None:
    params = {"foobar": "2", "foo_bar": "1", "sign": "XYZ", "empty": "", "Zeta": "z", "课": "程"}
    assert canonical_string(params) == "Zetazfoo_bar1foobar2课程"


def test_utf8_values_are_signed_as_utf8() -> None:
    params = {"a": "课程变更"}
    expected = hmac.new(b"k", "a课程变更".encode(), hashlib.sha256).hexdigest().upper()
    assert sign(params, "k", "hmac-sha256") == expected


def test_unknown_sign_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sign_method"):
        Signer("s", "sha1")


@pytest.mark.parametrize("method", ["md5", "hmac", "hmac-sha256"])
def test_verify(method: str) -> None:
    params = {**OFFICIAL, "sign_method": method}
    params["sign"] = sign(params, "helloworld", method)
    assert verify(params, "helloworld")
    assert verify({**params, "sign": params["sign"].lower()}, "helloworld")
    assert not verify(params, "wrong-secret")
    assert not verify({**params, "num_iid": "1"}, "helloworld")
    assert not verify({**params, "sign_method": "sha1"}, "helloworld")
    assert not verify({**params, "sign": "非ASCII"}, "helloworld")


def test_signer_is_reusable() -> None:
    signer = Signer("helloworld", "md5")
    assert signer.method == "md5"
    assert signer.sign(OFFICIAL) == signer.sign(OFFICIAL) == "66987CB115214E59E6EC978214934FB8"


def test_template_refuses_overlapping_and_empty_values() -> None:
    with pytest.raises(ValueError, match="both static and per call"):
        CanonicalTemplate({"a": "1"}, ("a",))
    with pytest.raises(ValueError, match="must not be empty"):
        CanonicalTemplate({"a": "1"}, ("b",)).render("")


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(lambda n: n != "sign")


@given(
    static=st.dictionaries(_names, st.text(max_size=8), max_size=8),
    dynamic=st.dictionaries(_names, st.text(min_size=1, max_size=8), min_size=1, max_size=3),
)
def test_template_equals_canonical_string(static: dict[str, str], dynamic: dict[str, str]) -> None:
    static = {k: v for k, v in static.items() if k not in dynamic}
    template = CanonicalTemplate(static, tuple(dynamic))
    assert template.render(*dynamic.values()) == canonical_string({**static, **dynamic})
