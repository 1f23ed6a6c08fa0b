"""The official `elasticsearch` Python client, unchanged, against the server.

The client sends `application/vnd.elasticsearch+json; compatible-with=9` and
refuses any 2xx answer without `X-Elastic-Product: Elasticsearch`, so every
passing call here also checks those wire conventions.
"""

import math

import pytest
from elasticsearch import BadRequestError, Elasticsearch, NotFoundError

E5 = ".multilingual-e5-small-elasticsearch"
ELSER = ".elser-2-elasticsearch"
MINILM = "my-minilm"
MINILM_CONFIG = {
    "service": "elasticsearch",
    "service_settings": {
        "model_id": "all-minilm-l6-v2",
        "num_allocations": 1,
        "num_threads": 1,
    },
}


@pytest.fixture(scope="session")
def client(server_url):
    es = Elasticsearch(server_url, request_timeout=120)
    yield es
    es.close()


@pytest.fixture(scope="module")
def minilm(client):
    """A user-created text_embedding endpoint, shared by the tests below."""
    created = client.inference.put(
        task_type="text_embedding",
        inference_id=MINILM,
        inference_config=MINILM_CONFIG,
    )
    yield created
    client.inference.delete(inference_id=MINILM)


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


def vectors(resp):
    return [item["embedding"] for item in resp["text_embedding"]]


def test_info(client):
    info = client.info()
    assert info["version"]["number"].startswith("9.")
    assert info["tagline"] == "You Know, for Search"
    assert info["cluster_name"]
    # The server answers in the media type the client asked for.
    assert info.meta.headers["content-type"].startswith(
        "application/vnd.elasticsearch+json"
    )


def test_put_answers_the_stored_endpoint(minilm):
    assert minilm["inference_id"] == MINILM
    assert minilm["task_type"] == "text_embedding"
    assert minilm["service"] == "elasticsearch"
    assert minilm["service_settings"]["model_id"] == "all-minilm-l6-v2"
    assert minilm["service_settings"]["num_allocations"] == 1


def test_get_one(client, minilm):
    resp = client.inference.get(inference_id=MINILM)
    assert [e["inference_id"] for e in resp["endpoints"]] == [MINILM]
    endpoint = resp["endpoints"][0]
    assert endpoint["task_type"] == "text_embedding"
    assert endpoint["service_settings"]["model_id"] == "all-minilm-l6-v2"

    by_task = client.inference.get(task_type="text_embedding", inference_id=MINILM)
    assert by_task["endpoints"] == resp["endpoints"]


def test_get_all(client, minilm):
    ids = {e["inference_id"] for e in client.inference.get()["endpoints"]}
    assert {MINILM, E5, ELSER} <= ids

    # `_all` for one task type lists only that type.
    dense = client.inference.get(task_type="text_embedding")["endpoints"]
    assert {e["task_type"] for e in dense} == {"text_embedding"}
    assert {MINILM, E5} <= {e["inference_id"] for e in dense}
    assert ELSER not in {e["inference_id"] for e in dense}


def test_text_embedding(client, minilm):
    sentences = [
        "The cat sat on the mat.",
        "A kitten was sitting on the rug.",
        "Interest rates were raised to fight inflation.",
        "The central bank increased borrowing costs.",
    ]
    resp = client.inference.text_embedding(inference_id=MINILM, input=sentences)
    vecs = vectors(resp)
    assert len(vecs) == len(sentences)
    for v in vecs:
        assert len(v) == 384
        assert abs(norm(v) - 1.0) < 1e-3
    cat, kitten, rates, bank = vecs
    # Related sentences are closer than unrelated ones, both ways round.
    assert cosine(cat, kitten) > cosine(cat, rates) + 0.2
    assert cosine(rates, bank) > cosine(rates, kitten) + 0.2
    assert cosine(cat, kitten) > 0.5 and cosine(rates, bank) > 0.5


def test_batching_does_not_change_embeddings(client, minilm):
    # Batched inputs are padded to the longest; padding must not leak into
    # the short input's vector, and answers keep input order.
    short = "Thanks!"
    long = (
        "When the old mill finally closed after almost a century, the town "
        "lost not only its largest employer but also the sound of its wheel."
    )
    alone = vectors(client.inference.text_embedding(inference_id=MINILM, input=short))
    both = vectors(
        client.inference.text_embedding(inference_id=MINILM, input=[long, short])
    )
    assert len(alone) == 1 and len(both) == 2
    assert cosine(alone[0], both[1]) > 0.9999
    assert cosine(alone[0], both[0]) < 0.9


def test_preconfigured_endpoint_is_multilingual_e5(client):
    """Elasticsearch's default text model: multilingual-e5-small."""
    english = "The cat is sleeping on the sofa."
    translations = [
        "Le chat dort sur le canapé.",
        "Die Katze schläft auf dem Sofa.",
        "猫がソファの上で寝ています。",
    ]
    unrelated = "Stock markets fell sharply after the interest rate decision."
    en, *others, off = vectors(
        client.inference.text_embedding(
            inference_id=E5, input=[english, *translations, unrelated], input_type="search"
        )
    )
    assert len(en) == 384
    for other in others:
        assert cosine(en, other) > cosine(en, off)
        assert cosine(other, en) > cosine(other, off)


def test_e5_prefixes_follow_input_type(client, minilm):
    """`search` embeds `query: ` + text, `ingest` `passage: ` + text, as E5 wants."""
    text = "how long do cats sleep"

    def embed(input_type=None, endpoint=E5, value=text):
        resp = client.inference.text_embedding(
            inference_id=endpoint, input=[value], input_type=input_type
        )
        return vectors(resp)[0]

    plain = embed()
    assert cosine(embed("search"), embed(value="query: " + text)) > 0.99999
    assert cosine(embed("ingest"), embed(value="passage: " + text)) > 0.99999
    assert cosine(embed("search"), plain) < 0.999
    # An endpoint's task settings choose the prefix when the request does not.
    client.inference.put(
        task_type="text_embedding",
        inference_id="e5-ingest",
        inference_config={
            "service": "elasticsearch",
            "service_settings": {
                "model_id": "multilingual-e5-small",
                "num_allocations": 1,
                "num_threads": 1,
            },
            "task_settings": {"input_type": "ingest"},
        },
    )
    try:
        assert cosine(embed(endpoint="e5-ingest"), embed("ingest")) > 0.99999
        assert cosine(embed("search", "e5-ingest"), embed("search")) > 0.99999
    finally:
        client.inference.delete(inference_id="e5-ingest")
    # A model without prefixes (MiniLM) embeds the text alike for every input_type.
    assert cosine(embed("search", MINILM), embed("ingest", MINILM)) > 0.99999


def test_generic_inference(client, minilm):
    resp = client.inference.inference(
        task_type="text_embedding",
        inference_id=MINILM,
        input="How do I reset my password?",
    )
    [v] = vectors(resp)
    assert len(v) == 384

    # Without a task type in the path the endpoint's own type is used.
    resp = client.inference.inference(inference_id=MINILM, input=["a", "b", "c"])
    assert len(vectors(resp)) == 3


def test_task_type_mismatch(client, minilm):
    with pytest.raises(BadRequestError) as err:
        client.inference.inference(
            task_type="sparse_embedding", inference_id=MINILM, input="hello"
        )
    assert err.value.error == "status_exception"
    assert "Incompatible task_type" in err.value.body["error"]["reason"]


def test_sparse_embedding(client):
    resp = client.inference.sparse_embedding(
        inference_id=ELSER, input="what is the capital of france"
    )
    [item] = resp["sparse_embedding"]
    assert item["is_truncated"] is False
    weights = item["embedding"]
    assert "paris" in weights
    assert weights["france"] > 0 and weights["capital"] > 0
    assert all(w > 0 for w in weights.values())


def test_sparse_embedding_flags_truncation(client):
    text = " ".join(["the capital of france is paris"] * 200)
    resp = client.inference.sparse_embedding(inference_id=ELSER, input=[text, "paris"])
    flags = [item["is_truncated"] for item in resp["sparse_embedding"]]
    assert flags == [True, False]


def test_delete(client):
    client.inference.put(
        task_type="text_embedding",
        inference_id="to-delete",
        inference_config=MINILM_CONFIG,
    )
    assert client.inference.get(inference_id="to-delete")["endpoints"]

    resp = client.inference.delete(inference_id="to-delete")
    assert resp["acknowledged"] is True

    with pytest.raises(NotFoundError) as err:
        client.inference.get(inference_id="to-delete")
    assert err.value.error == "resource_not_found_exception"
    with pytest.raises(NotFoundError):
        client.inference.text_embedding(inference_id="to-delete", input="hello")


def test_duplicate_put(client, minilm):
    with pytest.raises(BadRequestError) as err:
        client.inference.put(
            task_type="text_embedding",
            inference_id=MINILM,
            inference_config=MINILM_CONFIG,
        )
    assert err.value.error == "resource_already_exists_exception"


def test_bad_id(client):
    with pytest.raises(BadRequestError) as err:
        client.inference.put(
            task_type="text_embedding",
            inference_id="Not-Valid",
            inference_config=MINILM_CONFIG,
        )
    assert err.value.status_code == 400
    assert err.value.error == "action_request_validation_exception"


def test_unknown_model(client):
    config = {**MINILM_CONFIG, "service_settings": {"model_id": "no-such-model"}}
    with pytest.raises(BadRequestError) as err:
        client.inference.put(
            task_type="text_embedding", inference_id="no-model", inference_config=config
        )
    # The message names the installed models.
    assert "all-minilm-l6-v2" in err.value.body["error"]["reason"]


def test_preconfigured_cannot_be_deleted(client):
    with pytest.raises(BadRequestError) as err:
        client.inference.delete(inference_id=E5)
    assert "force=true" in err.value.body["error"]["reason"]
    assert client.inference.get(inference_id=E5)["endpoints"]


def test_delete_dry_run_keeps_the_endpoint(client, minilm):
    resp = client.inference.delete(inference_id=MINILM, dry_run=True)
    assert resp.body == {
        "acknowledged": False,
        "pipelines": [],
        "indexes": [],
        "error_message": "",
    }
    assert client.inference.get(inference_id=MINILM)["endpoints"]


# The client marks the `embedding` API as a technical preview.
@pytest.mark.filterwarnings("ignore::elasticsearch.exceptions.GeneralAvailabilityWarning")
def test_embedding_task(client):
    client.inference.put(
        task_type="embedding", inference_id="my-embedding", inference_config=MINILM_CONFIG
    )
    try:
        text = "A kitten sleeps on the rug."
        resp = client.inference.embedding(
            inference_id="my-embedding",
            embedding={
                "input": [
                    text,
                    {"content": {"type": "text", "format": "text", "value": text}},
                ],
                "input_type": "ingest",
            },
        )
        plain, content = [item["embedding"] for item in resp["embeddings"]]
        assert len(plain) == 384 and cosine(plain, content) > 0.9999
        with pytest.raises(BadRequestError) as err:
            client.inference.embedding(
                inference_id="my-embedding",
                embedding={"input": {"content": {"type": "audio", "value": "data:audio/wav;base64,UklG"}}},
            )
        assert "[audio]" in err.value.body["error"]["reason"]
    finally:
        client.inference.delete(inference_id="my-embedding")


def test_elser_service_defaults_its_model(client):
    created = client.inference.put(
        task_type="sparse_embedding",
        inference_id="my-elser",
        inference_config={"service": "elser", "service_settings": {"num_allocations": 1, "num_threads": 1}},
    )
    try:
        assert created["service"] == "elasticsearch"
        assert created["service_settings"]["model_id"] == "splade-tiny"
        assert created["chunking_settings"] == {
            "strategy": "sentence",
            "max_chunk_size": 250,
            "sentence_overlap": 1,
        }
        resp = client.inference.sparse_embedding(inference_id="my-elser", input="capital of france")
        assert "paris" in resp["sparse_embedding"][0]["embedding"]
    finally:
        client.inference.delete(inference_id="my-elser")


def test_unknown_endpoint(client):
    with pytest.raises(NotFoundError) as err:
        client.inference.text_embedding(inference_id="does-not-exist", input="hello")
    e = err.value
    assert e.status_code == 404
    assert e.error == "resource_not_found_exception"
    assert e.body["status"] == 404
    assert e.body["error"]["root_cause"][0]["type"] == "resource_not_found_exception"
    assert "does-not-exist" in e.body["error"]["reason"]


def test_rerank(client):
    documents = [
        "Photosynthesis turns light into chemical energy in plants.",
        "The Eiffel Tower stands in Paris, the capital of France.",
        "Stock markets fell sharply today after the rate decision.",
    ]
    resp = client.inference.rerank(
        inference_id=".rerank-v1-elasticsearch",
        query="what is the capital of france",
        input=documents,
        top_n=2,
    )
    ranked = resp["rerank"]
    assert len(ranked) == 2
    assert ranked[0]["index"] == 1
    assert ranked[0]["text"] == documents[1]
    assert ranked[0]["relevance_score"] >= ranked[1]["relevance_score"]


def test_rerank_needs_a_query(client):
    with pytest.raises(BadRequestError):
        client.inference.inference(
            task_type="rerank",
            inference_id=".rerank-v1-elasticsearch",
            input=["a document"],
        )


def test_completion(client):
    resp = client.inference.completion(
        inference_id=".smollm2-135m-instruct-completion",
        input="What is the capital of France?",
        task_settings={"max_tokens": 16},
    )
    assert "Paris" in resp["completion"][0]["result"]
