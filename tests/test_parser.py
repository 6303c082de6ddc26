"""The unified Kie state parser: recordInfo answers and callbacks, good and bad."""

import json

import pytest

from imagegen.kie import extract_task_id, parse_kie_state

URL = "https://cdn.example.com/generated.jpg"


def record_info(state, result_json="", fail_code="", fail_msg="", msg_key="msg"):
    return {"code": 200, msg_key: "success", "data": {
        "taskId": "task_1", "model": "z-image", "state": state, "param": "{\"model\":\"z-image\"}",
        "resultJson": result_json, "failCode": fail_code, "failMsg": fail_msg, "costTime": 15000,
        "completeTime": 1698765432000, "createTime": 1698765400000, "updateTime": 1698765432000}}


def test_record_info_success_result_json_is_a_string():
    state, urls, error = parse_kie_state(record_info("success", json.dumps({"resultUrls": [URL]})))
    assert (state, urls, error) == ("success", [URL], "")


def test_record_info_fail_carries_fail_msg_and_code():
    state, urls, error = parse_kie_state(
        record_info("fail", "", "422", "Invalid prompt: prompt contains prohibited content"))
    assert state == "fail" and urls == []
    assert "prohibited content" in error and "422" in error


@pytest.mark.parametrize("state", ["waiting", "queuing", "generating"])
def test_record_info_pending_states(state):
    assert parse_kie_state(record_info(state)) == (state, [], "")


def test_message_key_variant_is_accepted():
    state, urls, _ = parse_kie_state(record_info("success", json.dumps({"resultUrls": [URL]}), msg_key="message"))
    assert state == "success" and urls == [URL]


def test_documented_callback_shape():
    body = {"code": 200, "msg": "success", "taskId": "task_9",
            "data": {"task_id": "task_9", "callbackType": "task_completed"}}
    assert extract_task_id(body) == "task_9"
    state, urls, _ = parse_kie_state(body)
    assert state == "success" and urls == []  # a wake-up: recordInfo brings the URLs


def test_seen_callback_shape_with_state_and_failure():
    body = {"code": 501, "msg": "Generation Failed",
            "data": {"task_id": "t", "state": "fail", "resultJson": "", "failCode": "500", "failMsg": "boom"}}
    state, urls, error = parse_kie_state(body)
    assert state == "fail" and "boom" in error
    # the same without a state: code 501 means failed
    body["data"].pop("state")
    assert parse_kie_state(body).state == "fail"


@pytest.mark.parametrize("payload,expected", [
    ({"taskId": "a"}, "a"),
    ({"data": {"taskId": "b"}}, "b"),
    ({"data": {"task_id": "c"}}, "c"),
    ({"data": {"task_id": 42}}, "42"),
    ({"data": {"task_id": ""}}, None),
    ({"taskId": True}, None),
    ([], None),
    ("x", None),
])
def test_task_id_locations(payload, expected):
    assert extract_task_id(payload) == expected


def test_result_json_as_dict_is_tolerated():
    state, urls, _ = parse_kie_state(record_info("success", {"resultUrls": [URL]}))
    assert state == "success" and urls == [URL]


@pytest.mark.parametrize("raw,reason", [
    ("", "empty"),
    (None, "empty"),
    ("{not json", "not valid JSON"),
    ("[1,2]", "not an object"),
    ('{"resultUrls": "x"}', "no resultUrls list"),
    ('{"resultUrls": ["ftp://x", 5]}', "no http(s) URL"),
])
def test_bad_result_json_gives_success_without_urls_and_a_reason(raw, reason):
    state, urls, error = parse_kie_state(record_info("success", raw))
    assert state == "success" and urls == [] and reason in error


@pytest.mark.parametrize("payload", [None, 1, "text", [], {}, {"code": 422, "msg": "recordInfo is null", "data": None},
                                     {"data": "str"}, {"data": {}}, {"code": 200, "data": {"state": 5}}])
def test_unreadable_payloads_are_invalid_not_raised(payload):
    state, urls, error = parse_kie_state(payload)
    assert state == "invalid" and urls == [] and error


def test_unknown_state_is_reported():
    state, _, error = parse_kie_state(record_info("exploded"))
    assert state == "unknown" and "exploded" in error
