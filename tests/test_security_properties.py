"""Property-based tests (hypothesis): the Kie state parser and the callback endpoint take anything.

* parse_kie_state / extract_task_id: arbitrary JSON values and callback-shaped objects never raise and
  always give a well-formed answer (only http(s) URLs, URLs only on success).
* the callback endpoint: arbitrary bytes, JSON, content types, query strings and signature headers never
  raise out of the handler (no 5xx), and a workflow is signalled only when the request is authentic
  (right per-job token, a task id, and, with an HMAC key, a valid fresh signature over that task id);
  authentic well-formed requests are always signalled.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagegen.callbacks import CALLBACK_PATH, callback_token
from imagegen.kie import KNOWN_STATES, extract_task_id, parse_kie_state
from tests.test_security_support import HMAC_KEY, SECRET, CallbackServer, sign

PROPS = settings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ENDPOINT = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4),
                           max_leaves=20)
urls = st.one_of(st.just("https://tempfile.aiquickdraw.com/x.png"), st.just("http://127.0.0.1/a.png"),
                 st.just("ftp://x/y"), st.just("javascript:alert(1)"), text)
result_json = st.one_of(
    st.builds(lambda us: json.dumps({"resultUrls": us}), st.lists(urls, max_size=3)),
    st.builds(lambda v: json.dumps(v), json_values),
    st.builds(lambda us: {"resultUrls": us}, st.lists(urls, max_size=3)),
    text, st.just(""), st.none(),
)
task_ids = st.one_of(st.just("task_z-image_1"), text, st.integers(), st.none(), json_values)
data_objs = st.fixed_dictionaries({}, optional={
    "task_id": task_ids, "taskId": task_ids,
    "state": st.one_of(st.sampled_from(KNOWN_STATES + ("SUCCESS", " fail ", "done")), json_values),
    "callbackType": st.one_of(st.just("task_completed"), text),
    "resultJson": result_json, "failCode": json_values, "failMsg": json_values,
})
callback_like = st.fixed_dictionaries({}, optional={
    "code": st.one_of(st.sampled_from([200, 501, 422, "200"]), json_values),
    "msg": json_values, "message": json_values, "taskId": task_ids,
    "data": st.one_of(data_objs, json_values),
})
any_payload = st.one_of(json_values, callback_like)


@PROPS
@given(any_payload)
def test_parser_never_raises_and_answers_sanely(payload):
    state, found, error = parse_kie_state(payload)
    assert state in KNOWN_STATES + ("unknown", "invalid")
    assert isinstance(error, str) and isinstance(found, list)
    assert all(isinstance(u, str) and u.lower().startswith(("http://", "https://")) for u in found)
    if state != "success":
        assert found == []
    task_id = extract_task_id(payload)
    assert task_id is None or (isinstance(task_id, str) and task_id.strip() == task_id and task_id)


@PROPS
@given(st.lists(st.just("https://cdn.example/a.png") | st.just("http://h/b.jpg"), min_size=1, max_size=3))
def test_parser_returns_exactly_the_http_urls_of_a_success(good):
    body = {"code": 200, "data": {"state": "success", "resultJson": json.dumps({"resultUrls": good + [1, None]})}}
    assert parse_kie_state(body) == ("success", good, "")


@PROPS
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parser_on_decoded_arbitrary_bytes(raw):
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        return
    parse_kie_state(payload)
    extract_task_id(payload)


# --------------------------------------------------------------------------- the endpoint

JOB = "0123456789abcdef"
TASK = "task_z-image_1"
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@st.composite
def requests(draw):
    """Mostly-authentic requests with 0..n dimensions spoiled, so both outcomes are exercised."""
    def spoil() -> bool:
        return draw(st.integers(0, 3)) == 0  # each dimension is spoiled a quarter of the time

    job = draw(st.one_of(st.just(""), text)) if spoil() else JOB
    query: dict[str, str] = {}
    if job or draw(st.booleans()):
        query["job"] = job
    token_kind = draw(st.sampled_from(["wrong", "missing", "other"])) if spoil() else "valid"
    if token_kind == "valid":
        query["token"] = callback_token(SECRET, job)
    elif token_kind == "wrong":
        query["token"] = draw(header_text)
    elif token_kind == "other":
        query["token"] = callback_token(SECRET, job + "x")
    if spoil():
        ctype = draw(st.one_of(st.sampled_from(["text/plain", "multipart/form-data", "application/octet-stream",
                                                "", "application/jsonx"]), header_text))
    else:
        ctype = draw(st.sampled_from(["application/json", "application/json; charset=utf-8",
                                      "application/vnd.kie+json", "APPLICATION/JSON"]))
    body_kind = draw(st.sampled_from(["json", "bytes", "callback"])) if spoil() else "signed callback"
    if body_kind in ("callback", "signed callback"):
        payload = draw(callback_like)
        if body_kind == "signed callback":
            data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
            payload = {**payload, "data": {**data, "task_id": TASK}}
        body = json.dumps(payload).encode()
    elif body_kind == "json":
        body = json.dumps(draw(json_values)).encode()
    else:
        body = draw(st.binary(max_size=400))
    now = int(time.time())
    sig_kind = draw(st.sampled_from(["none", "garbage", "stale", "future", "other task"])) if spoil() else "valid"
    headers = {"Content-Type": ctype}
    if sig_kind == "valid":
        headers.update(sign(HMAC_KEY, TASK, now))
    elif sig_kind == "stale":
        headers.update(sign(HMAC_KEY, TASK, now - 310 - draw(st.integers(0, 10**6))))
    elif sig_kind == "future":
        headers.update(sign(HMAC_KEY, TASK, now + 310 + draw(st.integers(0, 10**6))))
    elif sig_kind == "other task":
        headers.update(sign(HMAC_KEY, draw(text) or "t", now))
    elif sig_kind == "garbage":
        headers["X-Webhook-Timestamp"] = draw(header_text)
        headers["X-Webhook-Signature"] = draw(header_text)
    return query, body, headers


def _candidates(body: bytes) -> list[str]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(payload, dict):
        return []
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    out = []
    for v in (payload.get("taskId"), data.get("taskId"), data.get("task_id")):
        if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).strip() and len(str(v).strip()) <= 200:
            out.append(str(v).strip())
    return out


def authentic(query, body, headers, hmac_on: bool) -> bool:
    job = query.get("job", "")
    if not job or len(job) > 128 or query.get("token") != callback_token(SECRET, job):
        return False
    ids = _candidates(body)
    if not ids:
        return False
    if not hmac_on:
        return True
    ts = headers.get("X-Webhook-Timestamp", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
        return False
    return any(sign(HMAC_KEY, t, int(ts))["X-Webhook-Signature"] == headers.get("X-Webhook-Signature") for t in ids)


def well_formed(headers) -> bool:
    return headers["Content-Type"].split(";")[0].strip().lower() in ("application/json", "application/vnd.kie+json")


async def _exercise(req, hmac_on: bool) -> None:
    query, body, headers = req
    async with CallbackServer(hmac_key=HMAC_KEY if hmac_on else None) as srv:
        path = CALLBACK_PATH + ("?" + urlencode(query) if query else "")
        status, _ = await srv.post(path, data=body, headers=headers, content_type=None)
        assert status in (200, 400, 401, 403, 413), status  # never a 5xx: nothing raised out of the handler
        signalled = len(srv.temporal.signals)
        assert signalled <= 1
        if signalled:
            assert authentic(query, body, headers, hmac_on), "signalled an inauthentic callback"
            assert status == 200
        elif authentic(query, body, headers, hmac_on) and well_formed(headers):
            raise AssertionError(f"authentic callback not signalled (status {status})")
        assert srv.stats["received"] == 1
        assert srv.stats["signalled"] + srv.stats["rejected"] == 1


@ENDPOINT
@given(requests())
async def test_endpoint_signals_only_authentic_callbacks_without_hmac(req):
    await _exercise(req, hmac_on=False)


@ENDPOINT
@given(requests())
async def test_endpoint_signals_only_authentic_callbacks_with_hmac(req):
    await _exercise(req, hmac_on=True)
