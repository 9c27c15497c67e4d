"""Layered read-only env, and secret redaction in text and data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from orchestrator.define.env import SECRET_MARKERS, Env, Redactor, is_secret_key
from orchestrator.errors import DefinitionError

# --- Env ----------------------------------------------------------------------------------


def test_first_layer_wins_then_later_layers_then_none() -> None:
    env = Env({"MODE": "workflow"}, {"MODE": "runtime", "HOME": "/home/me"})
    assert env.get("MODE") == "workflow"
    assert env["HOME"] == "/home/me"
    assert env.get("MISSING") is None
    assert env.get("MISSING", "fallback") == "fallback"
    assert "HOME" in env and "MISSING" not in env
    assert sorted(env.keys()) == ["HOME", "MODE"] and len(env) == 2
    with pytest.raises(KeyError):
        env["MISSING"]


def test_no_layers_is_empty() -> None:
    assert Env().as_dict() == {} and Env().get("X") is None


def test_env_is_read_only() -> None:
    env: Any = Env({"A": "1"})
    assert isinstance(env, Mapping)
    with pytest.raises(TypeError):
        env["A"] = "2"
    with pytest.raises(TypeError):
        del env["A"]
    with pytest.raises(AttributeError):
        env.update({"A": "2"})
    with pytest.raises(AttributeError):
        env.anything = 1
    assert env["A"] == "1"


def test_env_is_a_snapshot_and_as_dict_is_a_copy() -> None:
    layer = {"A": "1"}
    env = Env(layer)
    layer["A"] = "changed"
    layer["B"] = "new"
    copy = env.as_dict()
    copy["A"] = "mutated"
    assert env.as_dict() == {"A": "1"}


def test_env_rejects_non_string_values_without_showing_them() -> None:
    with pytest.raises(DefinitionError, match="PORT") as info:
        Env({"PORT": 8080})  # type: ignore[dict-item]
    assert "8080" not in str(info.value)


def test_env_repr_never_shows_values() -> None:
    text = repr(Env({"API_TOKEN": "s3cr3t-value"}))
    assert "API_TOKEN" in text and "s3cr3t-value" not in text


# --- Redactor -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_TOKEN", True),
        ("db_password", True),
        ("Client_Secret", True),
        ("STRIPE_KEY", True),
        ("HOME", False),
        ("PATH", False),
    ],
)
def test_secret_key_names(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret
    assert set(SECRET_MARKERS) == {"SECRET", "TOKEN", "PASSWORD", "KEY"}


def test_redact_masks_every_occurrence_of_every_secret() -> None:
    redactor = Redactor({"API_TOKEN": "tok-123", "DB_PASSWORD": "hunter22", "HOME": "/home/me"})
    text = "tok-123 then hunter22 and tok-123 again in /home/me"
    assert redactor.redact(text) == "*** then *** and *** again in /home/me"


def test_redact_takes_the_longest_secret_first_when_they_overlap() -> None:
    redactor = Redactor({"SHORT_KEY": "abcd", "LONG_KEY": "abcdefgh"})
    assert redactor.redact("x abcdefgh y abcd z") == "x *** y *** z"


def test_values_with_regex_characters_are_matched_literally() -> None:
    redactor = Redactor({"API_KEY": "a.b*c(d"})
    assert redactor.redact("a.b*c(d aXbbc(d") == "*** aXbbc(d"


def test_values_shorter_than_min_length_are_ignored() -> None:
    env = {"RETRY_TOKEN": "1", "FLAG_SECRET": "abc", "API_KEY": "abcd"}
    assert Redactor(env).redact("1 abc abcd") == "1 abc ***"
    assert Redactor(env, min_length=1).redact("1 abc abcd") == "*** *** ***"


def test_extra_keys_mark_other_names_as_secret() -> None:
    env = {"DATABASE_URL": "postgres://u:p@db/x", "API_TOKEN": "tok-123"}
    assert Redactor(env).redact("postgres://u:p@db/x") == "postgres://u:p@db/x"
    redactor = Redactor(env, extra_keys=["DATABASE_URL"])
    assert redactor.redact("url=postgres://u:p@db/x tok-123") == "url=*** ***"


def test_redactor_accepts_an_env() -> None:
    env = Env({"API_TOKEN": "from-workflow"}, {"API_TOKEN": "from-runtime"})
    redactor = Redactor(env)
    assert redactor.redact("from-workflow from-runtime") == "*** from-runtime"


def test_no_secrets_is_a_fast_path_returning_the_same_text() -> None:
    redactor = Redactor({"HOME": "/home/me"})
    text = "".join(["some log line "] * 10)
    assert not redactor
    assert redactor.redact(text) is text
    assert redactor.find_in(text) == []
    assert Redactor({"API_TOKEN": "tok-123"})


def test_redact_data_deep_copies_and_masks_nested_strings() -> None:
    redactor = Redactor({"API_TOKEN": "tok-123"})
    data = {
        "headers": {"Authorization": "Bearer tok-123", "tok-123": "as a key"},
        "items": [1, 2.5, True, None, ("tok-123", {"deep": ["x tok-123 y"]})],
    }
    redacted = redactor.redact_data(data)
    assert redacted == {
        "headers": {"Authorization": "Bearer ***", "***": "as a key"},
        "items": [1, 2.5, True, None, ["***", {"deep": ["x *** y"]}]],
    }
    assert data["headers"]["Authorization"] == "Bearer tok-123"  # the input is untouched
    redacted["items"][4][1]["deep"].append("new")
    assert data["items"][4][1]["deep"] == ["x tok-123 y"]


def test_redact_data_renders_other_objects_as_redacted_repr() -> None:
    class Client:
        def __repr__(self) -> str:
            return "Client(token='tok-123')"

    redactor = Redactor({"API_TOKEN": "tok-123"})
    assert redactor.redact_data({"client": Client()}) == {"client": "Client(token='***')"}


def test_find_in_names_the_keys_and_never_the_values() -> None:
    env = {"API_TOKEN": "tok-123", "ALIAS_TOKEN": "tok-123", "DB_PASSWORD": "hunter22"}
    redactor = Redactor(env)
    state = '{"auth": "tok-123", "note": "fine"}'
    assert redactor.find_in(state) == ["ALIAS_TOKEN", "API_TOKEN"]
    assert redactor.find_in("nothing here") == []


def test_find_in_reports_a_secret_contained_in_a_longer_one() -> None:
    redactor = Redactor({"SHORT_KEY": "abcd", "LONG_KEY": "abcdefgh"})
    assert redactor.find_in("abcdefgh") == ["LONG_KEY", "SHORT_KEY"]


def test_many_secrets_one_pattern() -> None:
    env = {f"TOKEN_{i}": f"value-{i:04d}-{'x' * (i % 7)}" for i in range(500)}
    redactor = Redactor(env)
    text = " ".join(env.values())
    assert set(redactor.redact(text).split()) == {"***"}
    assert re.search(r"value-\d", redactor.redact(text)) is None
