"""The official client's `basic_auth=` and `api_key=` against a server with
security on: authentication, privileges, API keys, and no secret in the log."""

import base64

import pytest
from elasticsearch import AuthenticationException, AuthorizationException, Elasticsearch

from conftest import SECURE_USERS

E5 = ".multilingual-e5-small-elasticsearch"


def _client(url, **auth):
    return Elasticsearch(url, request_timeout=120, **auth)


def test_basic_auth_and_privileges(secure_server):
    url, _ = secure_server
    with pytest.raises(AuthenticationException) as err:
        _client(url).inference.get()
    assert err.value.meta.status == 401
    assert err.value.body["error"]["type"] == "security_exception"

    bob = _client(url, basic_auth=("bob", SECURE_USERS["bob"][0]))
    me = bob.security.authenticate()
    assert me["username"] == "bob" and me["roles"] == ["inference_user"]
    got = bob.inference.text_embedding(inference_id=E5, input=["hello"])
    assert len(got["text_embedding"][0]["embedding"]) == 384
    with pytest.raises(AuthorizationException) as err:
        bob.inference.put(
            task_type="text_embedding",
            inference_id="bobs",
            inference_config={
                "service": "elasticsearch",
                "service_settings": {"model_id": "all-minilm-l6-v2", "num_allocations": 1, "num_threads": 1},
            },
        )
    assert err.value.meta.status == 403
    assert "cluster:admin/xpack/inference/put" in err.value.body["error"]["reason"]

    with pytest.raises(AuthenticationException):
        _client(url, basic_auth=("bob", "not-the-password")).inference.get()


def test_api_keys(secure_server):
    url, log_path = secure_server
    admin = _client(url, basic_auth=("admin", SECURE_USERS["admin"][0]))
    key = admin.security.create_api_key(
        name="py-reader",
        expiration="1d",
        role_descriptors={"reader": {"cluster": ["monitor_inference"]}},
    )
    assert set(key.body) >= {"id", "name", "api_key", "encoded", "expiration"}
    assert base64.b64decode(key["encoded"]).decode() == f"{key['id']}:{key['api_key']}"

    # Both forms the client takes: the encoded string and (id, api_key).
    for credential in (key["encoded"], (key["id"], key["api_key"])):
        reader = _client(url, api_key=credential)
        got = reader.inference.sparse_embedding(
            inference_id=".elser-2-elasticsearch", input="capital of france"
        )
        assert got["sparse_embedding"][0]["embedding"]
        assert reader.security.authenticate()["authentication_type"] == "api_key"

    listed = admin.security.get_api_key(id=key["id"])
    assert listed["api_keys"][0]["name"] == "py-reader"
    assert key["api_key"] not in str(listed.body)

    done = admin.security.invalidate_api_key(ids=[key["id"]])
    assert done["invalidated_api_keys"] == [key["id"]]
    with pytest.raises(AuthenticationException):
        _client(url, api_key=key["encoded"]).inference.get()

    log = log_path.read_text()
    assert "security on" in log
    for secret in [key["api_key"], key["encoded"]] + [p for p, _ in SECURE_USERS.values()]:
        assert secret not in log
