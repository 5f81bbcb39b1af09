"""Secrets never leave: tokens are validated at load, servers quoting the token are redacted on every output
path, redirects are never followed, URL passwords are never printed. Real CLI and Python API, the fake
TikTok over real HTTP, a Recorder as the other host and the webhook, DuckDB files (and PostgreSQL)."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
import requests
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import connector
from connector import redaction
from connector.config import BASE_URL_ENV
from connector.errors import ConnectorError, FatalAPIError
from connector.testing.fake_tiktok import FakeTikTok
from connector.testing.recorder import Recorder
from connector.tiktok import TikTokClient
from cli_helpers import cli, json_lines
from conftest import SOURCE_ID, make_order
from warehouse_helpers import postgres_target

MIN = redaction.MIN_SECRET_LENGTH
EXAMPLES = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
VISIBLE_ASCII = st.characters(min_codepoint=33, max_codepoint=126)
# Anything an environment variable can hold: no NUL, no lone surrogates.
ANY_CHAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
SPACE = st.text(st.sampled_from(" \t\r\n\x0b\x0c"), max_size=3)
TOKENS = st.one_of(
    st.tuples(SPACE, st.text(VISIBLE_ASCII, min_size=1, max_size=40), SPACE).map("".join),
    st.tuples(SPACE, st.text(ANY_CHAR, min_size=1, max_size=40), SPACE).map("".join),
)
# Long enough that no report, table or payload holds them by chance.
QUOTED_TOKENS = st.text(VISIBLE_ASCII, min_size=12, max_size=60)


@contextmanager
def secrets_of_this_example() -> Iterator[None]:
    """The registry only grows in a process (the safe side); generated values must not mask later tests' text."""
    saved = redaction._secrets, redaction._pattern
    try:
        yield
    finally:
        redaction._secrets, redaction._pattern = saved


@pytest.fixture(autouse=True)
def _isolated_secrets() -> Iterator[None]:
    with secrets_of_this_example():
        yield


def leaks(secret: str, *texts: str) -> list[str]:
    return [text for text in texts if secret in text]


# ---------------------------------------------------------------- the token at load


@EXAMPLES
@given(token=TOKENS)
def test_any_token_runs_or_exits_2_naming_the_key_and_is_never_printed(make_project, now, monkeypatch, capsys,
                                                                        token) -> None:
    stripped = token.strip()
    visible = re.fullmatch(r"[!-~]+", stripped) is not None
    with secrets_of_this_example(), FakeTikTok(access_token=stripped or "unused") as fake:
        monkeypatch.setenv(BASE_URL_ENV, fake.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", token)
        project = make_project([make_order(1, now)], tiktok={"timeout_seconds": 2})
        code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
        if visible:
            assert code == 0, out + err
            assert fake.accepted_event_ids() == ["ORD-00001"]  # the stripped token was the one sent
        else:
            assert code == 2, out + err
            assert "tiktok.access_token" in err and "Traceback" not in err
            assert fake.requests() == []
        for secret in {token, stripped}:
            if len(secret) >= MIN:
                assert not leaks(secret, out, err)


def test_an_invalid_token_is_refused_at_load_through_the_python_api(make_project, now, fake_tiktok, monkeypatch) -> None:
    token = "abc\ndef-token-value"
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", token)
    project = make_project([make_order(1, now)])
    with pytest.raises(connector.ConfigError) as raised:
        connector.sync(project.root)
    text = str(raised.value) + repr(raised.value) + "".join(traceback.format_exception(raised.value))
    assert "tiktok.access_token" in text and "TIKTOK_ACCESS_TOKEN" in text and "line break" in text
    assert "def-token-value" not in text and "abc" not in str(raised.value)
    assert fake_tiktok.requests() == []


def test_surrounding_whitespace_of_a_secret_file_is_stripped(make_project, now, fake_tiktok, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", "  test-token\r\n")
    project = make_project([make_order(1, now)])
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    assert fake_tiktok.accepted_event_ids() == ["ORD-00001"]


# ---------------------------------------------------------------- a server quoting the token

QUOTES = {  # code → message the fake sends, and where the run puts it
    40105: "token {token} has been revoked",  # fatal: the run's error
    50000: "backend failed for token {token}",  # retried: log warnings, then the run's error
    40002: "data.0.event_id: not allowed for token {token}",  # a refused event: rejects.detail
}


@pytest.fixture(scope="module")
def hook() -> Iterator[Recorder]:
    """An alert webhook receiver shared by a test's examples."""
    with Recorder() as recorder:
        yield recorder


@given(token=QUOTED_TOKENS, code=st.sampled_from(sorted(QUOTES)))
@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_token_quoted_by_the_server_reaches_no_output(make_project, fake_tiktok, monkeypatch, capsys, now, hook,
                                                        token, code) -> None:
    with secrets_of_this_example():
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", token)
        fake_tiktok.reset()
        fake_tiktok.quote_token_next(3, code, QUOTES[code])  # every attempt of the one batch
        project = make_project([make_order(1, now)], sync_overrides={"alert_webhook_url": hook.url},
                               tiktok={"max_retry_seconds": 0.3})
        alerts_before = len(hook.received())
        exit_code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json", "-v")
        assert token in fake_tiktok.requests()[0].message  # the fake did quote it
        [report] = json_lines(out)
        assert exit_code == (3 if code == 40002 else 1)
        errors = "\n".join(str(e) for (e,) in project.query("select error from tiktok_runs"))
        details = "\n".join(str(d) for (d,) in project.query("select detail from tiktok_rejects"))
        [alert] = [json.loads(r.body) for r in hook.received()[alerts_before:]]
        assert not leaks(token, out, err, errors, details, alert["text"], json.dumps(alert))
        if code == 40002:
            assert "token ***" in details and report["rejected_by_reason"] == {"rejected_by_tiktok": 1}
        else:
            assert "token ***" in report["error"] and report["error"] in errors and report["error"] in alert["text"]


@pytest.mark.parametrize("code", sorted(QUOTES))
def test_a_quoted_token_reaches_no_log_record_report_or_exception_of_the_python_api(
        make_project, fake_tiktok, monkeypatch, caplog, now, code) -> None:
    token = "pr0d-T0KEN/with+odd=chars\"'\\"
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", token)
    caplog.set_level(logging.DEBUG, logger="connector")
    project = make_project([make_order(1, now)])
    fake_tiktok.quote_token_next(3, code, QUOTES[code])
    [report] = connector.sync(project.root)
    assert token in fake_tiktok.requests()[0].message
    logged = [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    if code == 50000:
        assert any("token ***" in line for line in logged)  # the retry warnings carried the message, masked
    assert not leaks(token, report.to_text(), json.dumps(report.to_dict(), default=str), repr(report), *logged)

    fake_tiktok.reset()
    fake_tiktok.quote_token_next(1, 40105, QUOTES[40105])
    client = TikTokClient(fake_tiktok.base_url, token)
    with pytest.raises(FatalAPIError) as raised:
        client.track("offline", SOURCE_ID, [])
    exc = raised.value
    assert "token ***" in str(exc)
    assert not leaks(token, str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc)))


@given(secret=st.text(ANY_CHAR, min_size=MIN, max_size=30))
@settings(max_examples=60, deadline=None)
def test_every_registered_secret_is_masked_in_exceptions_and_their_tracebacks(secret) -> None:
    frame = "".join(traceback.format_exception(ConnectorError("")))
    assume(secret not in frame)  # text of the traceback's own (a secret 'Connec' is in the class name)
    with secrets_of_this_example():
        redaction.register(secret)
        exc = ConnectorError(f"the server said: {secret!r} / {json.dumps(secret)} / {secret}")
        text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
        assert secret not in text and json.dumps(secret)[1:-1] not in text and repr(secret)[1:-1] not in text


# ---------------------------------------------------------------- redirects


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(make_project, now, fake_tiktok, monkeypatch,
                                                                   capsys) -> None:
    token = "redirect-S3CRET-token"
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", token)
    with Recorder() as elsewhere:
        location = elsewhere.url.replace("http://", "http://user:S3cretPw@") + "?signature=abc#top"
        # through the admin surface, as a fake in another process is driven
        answer = requests.post(fake_tiktok.base_url.replace("/open_api", "/_fake/faults"),
                               json={"redirect_next": {"location": location, "n": 2, "http_status": 302}}, timeout=5)
        assert answer.json() == {"ok": True}
        project = make_project([make_order(1, now)])
        code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
        assert code == 1
        [report] = json_lines(out)
        plain = elsewhere.url  # scheme://host:port/path: no credentials, query or fragment
        assert "HTTP 302" in report["error"] and f"redirecting to {plain};" in report["error"]
        assert "not followed" in report["error"] and "tiktok.base_url" in report["error"]
        assert len(fake_tiktok.requests()) == 1  # fatal: no retry

        code, out, err = cli(capsys, "check", "--project", str(project.root))
        [line] = [line for line in out.splitlines() if "tiktok:" in line]
        assert "FAIL" in line and "redirect" in line and plain in line

        assert elsewhere.received() == [] and not elsewhere.got_a_token
        assert not leaks(token, out, err) and not leaks("S3cretPw", out, err, report["error"])
        assert "signature" not in report["error"]


def test_the_webhook_never_follows_a_redirect_and_the_run_goes_on(make_project, now, fake_tiktok, capsys) -> None:
    with Recorder() as elsewhere, FakeTikTok() as hook:
        hook.redirect_next(elsewhere.url)
        webhook_url = hook.base_url + "/v1.3/event/track/"
        project = make_project([make_order(1, now), make_order(2, now, currency="XYZ")],
                               sync_overrides={"alert_webhook_url": webhook_url})
        code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
        assert code == 3  # rejecting: the alert was due, its redirect changes nothing
        [report] = json_lines(out)
        assert report["events_sent"] == 1
        [note] = [n for n in report["notes"] if "alert webhook" in n]
        assert "HTTP 307" in note and "not followed" in note and elsewhere.url in note
        assert len(hook.requests()) == 1 and elsewhere.received() == []
        assert webhook_url not in out + err  # the webhook URL is a secret (Slack's carry it in the path)


# ---------------------------------------------------------------- URL passwords


@given(password=st.text(ANY_CHAR, min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_url_passwords_are_masked_whatever_they_are(password) -> None:
    url = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:5432/test"
    assert redaction.redact(f"cannot connect to {url}: refused") == \
        "cannot connect to postgresql://postgres:***@127.0.0.1:5432/test: refused"


@given(password=st.text(ANY_CHAR, min_size=MIN, max_size=20))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_warehouse_and_state_url_passwords_are_never_printed(make_project, now, fake_tiktok, capsys, password) -> None:
    with secrets_of_this_example():
        project = make_project([make_order(1, now)])
        # closed ports: every command fails to connect, and says so
        url = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:9/test"
        for section in ("warehouse", "state"):
            edit_config(project, lambda config: config.update({section: {"url": url}}))
            for command in (["sync", "--json"], ["check"], ["status"]):
                code, out, err = cli(capsys, *command, "--project", str(project.root))
                assert code == 1 and "Connection refused" in out + err, out + err
                assert not leaks(password, out, err) and not leaks(quote(password, safe=""), out, err)


def edit_config(project, change) -> None:
    path = project.root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))


def test_a_postgres_url_password_is_never_printed(make_project, now, fake_tiktok, capsys) -> None:
    password = "S3cretPw-for-trust-auth"
    project = make_project([make_order(1, now)], query="select * from no_such_table\n")
    with postgres_target() as target:  # a schema of its own: the runs it records stay out of public
        url = target.url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
        edit_config(project, lambda config: config.update({"warehouse": {"url": url}}))
        outputs = []
        for command in (["sync", "-vv"], ["sync", "--json"], ["check"], ["preview", "orders"], ["status"],
                        ["history", "orders"]):
            code, out, err = cli(capsys, *command, "--project", str(project.root))
            outputs += [out, err]
        assert "no_such_table" in "".join(outputs)  # the query error was printed, the password was not
        assert not leaks(password, *outputs)
        [report] = connector.sync(project.root)
        assert report.status == "failed" and password not in (report.error or "") + repr(report)


def test_values_of_secret_named_variables_are_masked_wherever_they_are_printed(make_project, fake_tiktok, now,
                                                                             monkeypatch, capsys) -> None:
    monkeypatch.setenv("PARTNER_SECRET", "s3cret-from-the-environment")
    project = make_project([make_order(1, now)], tiktok={"partner_name": "${PARTNER_SECRET}"})
    code, out, err = cli(capsys, "preview", "orders", "--project", str(project.root))
    assert code == 0 and '"partner_name": "***"' in out  # the request body, as it would be sent
    assert not leaks("s3cret-from-the-environment", out, err)


def test_the_new_faults_over_the_admin_surface(fake_tiktok) -> None:
    """redirect_next, drip_next and quote_token_next, as a fake in another process is driven."""
    faults = fake_tiktok.base_url.replace("/open_api", "/_fake/faults")
    track = fake_tiktok.base_url + "/v1.3/event/track/"
    assert requests.post(faults, json={"quote_token_next": {"code": 40105}, "drip_next": {"interval": 0.01},
                                       "redirect_next": {"location": "http://127.0.0.1:9/x"}}, timeout=5).ok
    answer = requests.post(track, json={}, headers={"Access-Token": "quoted-T0KEN"}, timeout=5)
    assert answer.json()["code"] == 40105 and "token quoted-T0KEN has been revoked" in answer.json()["message"]
    started = time.monotonic()
    answer = requests.post(track, json={}, headers={"Access-Token": "test-token"}, timeout=5)
    assert answer.status_code == 200 and time.monotonic() - started > 0.5  # over 100 bytes, 10 ms apart
    answer = requests.post(track, json={}, allow_redirects=False, timeout=5)
    assert answer.status_code == 307 and answer.headers["Location"] == "http://127.0.0.1:9/x"
    assert requests.post(faults, json={"redirect_next": {"location": "x", "http_status": 200}}, timeout=5).status_code \
        == 400
