"""The one redaction: process-wide secret values, and the logging filter that masks them."""

from __future__ import annotations

import io
import logging

import pytest

from orchestrator import RedactSecrets
from orchestrator.define.env import Redactor
from orchestrator.redaction import SECRETS, SecretValues, guard_handlers


@pytest.fixture
def known() -> SecretValues:
    return SecretValues()


def _handler(secrets: SecretValues) -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets(secrets))
    return handler, stream


def test_values_are_known_until_their_source_is_discarded(known: SecretValues) -> None:
    first, second = known.add({"tok-aaaa"}), known.add({"tok-aaaa", "pw-bbbb"})
    assert known.redact("tok-aaaa pw-bbbb") == "*** ***"
    known.discard(second)
    assert known.redact("tok-aaaa pw-bbbb") == "*** pw-bbbb"
    known.discard(first)
    assert not known and known.redact("tok-aaaa") == "tok-aaaa"


def test_a_secret_containing_another_is_masked_whole(known: SecretValues) -> None:
    known.add({"abcd"})
    assert known.redact("xabcdefy", also=frozenset({"abcdef"})) == "x***y"


def test_a_redactor_masks_its_own_secrets_and_every_known_one(known: SecretValues) -> None:
    known.add({"other-secret"})
    redactor = Redactor({"API_TOKEN": "mine-1234"}, known=known)
    assert redactor.redact("mine-1234 other-secret") == "*** ***"
    assert redactor.redact_data({"k": ["other-secret", ("mine-1234",)]}) == {"k": ["***", ["***"]]}
    assert redactor.values == {"mine-1234"} and redactor.find_in("other-secret") == []


def test_the_filter_on_a_handler_masks_records_of_every_logger_and_tracebacks(
    known: SecretValues,
) -> None:
    known.add({"hunter2222"})
    handler, stream = _handler(known)
    parent = logging.getLogger("test_redaction.parent")
    parent.addHandler(handler)
    parent.propagate = False
    try:
        logging.getLogger("test_redaction.parent.workers.output").warning("said %s", "hunter2222")
        try:
            raise ValueError("bad hunter2222")
        except ValueError:
            parent.exception("failed with %r", "hunter2222")
        parent.warning("stack", stack_info=True, extra={"x": 1})
    finally:
        parent.removeHandler(handler)
    text = stream.getvalue()
    assert "hunter2222" not in text
    assert "said ***" in text and "ValueError: bad ***" in text and "failed with '***'" in text


def test_guard_handlers_covers_the_handlers_a_logger_reaches_once() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger("test_redaction_guard")
    root.addHandler(handler)
    try:
        guard_handlers(logging.getLogger("test_redaction_guard.child"))
        guard_handlers(logging.getLogger("test_redaction_guard.child"))
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1
        token = SECRETS.add({"guarded-secret"})
        try:
            logging.getLogger("test_redaction_guard.child").error("x guarded-secret")
        finally:
            SECRETS.discard(token)
    finally:
        root.removeHandler(handler)
    assert "guarded-secret" not in stream.getvalue() and "x ***" in stream.getvalue()


def test_the_dashboard_masks_every_secret_this_process_knows_even_in_state() -> None:
    from tui.format import literal
    from tui.jsonview import scalar_text

    token = SECRETS.add({"screen-secret"})
    try:
        assert literal("auth: screen-secret").plain == "auth: ***"
        assert scalar_text({"auth": "screen-secret"}).plain == '{"auth": "***"}'
    finally:
        SECRETS.discard(token)
    assert literal("auth: screen-secret").plain == "auth: screen-secret"
