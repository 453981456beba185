"""kiln-server through the official `openai` Python client (and plain HTTP for malformed input).

Run by server/tests/openai.rs against a server it started:
    python3 server/tests/openai_client.py http://127.0.0.1:PORT MODEL_NAME
The server runs with --max-batch 4 --max-queue 4 --ctx-size 256.
"""

import concurrent.futures
import json
import re
import sys
import unittest
import urllib.error
import urllib.request

import openai

BASE, MODEL = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0)


def post(path, body, raw=False):
    """POST body (bytes or JSON-able) and return (status, parsed JSON or text)."""
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def metrics():
    with urllib.request.urlopen(BASE + "/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(kiln_\w+)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def error_of(e):
    """The error object of an openai exception (clients differ on whether `body` is wrapped)."""
    body = e.body
    return body.get("error", body) if isinstance(body, dict) else {}


def chat(content, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], temperature=0, **kw
    )


def stream_text(stream):
    """Concatenated text, finish reason and usage of a streamed response."""
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            piece = c.delta.content if hasattr(c, "delta") else c.text
            text += piece or ""
            finish = c.finish_reason or finish
    return text, finish, usage, chunks


class Api(unittest.TestCase):
    def test_models_and_health(self):
        ids = [m.id for m in client.models.list().data]
        self.assertEqual(ids, [MODEL])
        with urllib.request.urlopen(BASE + "/health", timeout=30) as r:
            self.assertEqual(json.loads(r.read())["status"], "ok")

    def test_chat_streamed_matches_whole(self):
        ask = "Write a long story about a dragon who learns to fly."
        whole = chat(ask, max_tokens=12)
        self.assertEqual(whole.object, "chat.completion")
        self.assertEqual(whole.choices[0].message.role, "assistant")
        self.assertEqual(whole.choices[0].finish_reason, "length")
        self.assertEqual(whole.usage.completion_tokens, 12)
        self.assertGreater(whole.usage.prompt_tokens, 5)
        self.assertEqual(whole.usage.total_tokens, whole.usage.prompt_tokens + 12)
        text, finish, usage, chunks = stream_text(
            chat(ask, max_tokens=12, stream=True,
                 stream_options={"include_usage": True}))
        self.assertEqual(text, whole.choices[0].message.content)
        self.assertEqual(finish, "length")
        self.assertEqual(usage.completion_tokens, 12)
        self.assertGreater(chunks, 3)

    def test_completions_and_max_tokens(self):
        r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(r.usage.completion_tokens, 5)
        self.assertEqual(r.choices[0].finish_reason, "length")
        text, finish, usage, _ = stream_text(client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, stream=True))
        self.assertEqual(text, r.choices[0].text)
        self.assertIsNone(usage, "usage only when stream_options asks")
        # Token ids are a prompt too.
        ids = client.completions.create(model=MODEL, prompt=[504, 3575, 282], max_tokens=2, temperature=0)
        self.assertEqual(ids.usage.prompt_tokens, 3)

    def test_stop_strings(self):
        base = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0)
        text = base.choices[0].text
        stop = text[6:9]
        cut = text[: text.index(stop)]
        for stream in (False, True):
            r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=16,
                                          temperature=0, stop=[stop, "never appears"], stream=stream)
            got, finish = (stream_text(r)[:2] if stream else (r.choices[0].text, r.choices[0].finish_reason))
            self.assertEqual(got, cut, f"stream={stream}")
            self.assertEqual(finish, "stop")

    def test_sampling_is_seeded(self):
        a = chat("Tell me a story.", max_tokens=10, seed=7, top_p=0.9).choices[0].message.content
        b = chat("Tell me a story.", max_tokens=10, seed=7, top_p=0.9).choices[0].message.content
        # temperature=0 in chat(); sample for real here:
        c = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
                                           max_tokens=10, seed=11, temperature=1.0)
        d = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
                                           max_tokens=10, seed=11, temperature=1.0)
        self.assertEqual(a, b)
        self.assertEqual(c.choices[0].message.content, d.choices[0].message.content)

    def test_concurrent_streams(self):
        # Three copies of one prompt beside three others, six streams for four slots: the copies
        # run in one batch through the same kernels, so they must agree exactly.
        story = "Write a long story about a cat."
        prompts = [story, "Explain in detail how rainbows form.", story, "Describe your favourite city at length.",
                   story, "Write a long poem about the sea."]

        def run(p):
            return stream_text(chat(p, max_tokens=10, stream=True, stream_options={"include_usage": True}))

        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            results = list(pool.map(run, prompts))
        for text, finish, usage, _ in results:
            self.assertIn(finish, ("length", "stop"))
            self.assertLessEqual(usage.completion_tokens, 10)
            if finish == "length":
                self.assertEqual(usage.completion_tokens, 10)
            self.assertTrue(text)
        self.assertEqual(results[0][1], "length", "a long story does not end in ten tokens")
        self.assertEqual(results[0][0], results[2][0])
        self.assertEqual(results[0][0], results[4][0])

    def test_bad_requests(self):
        status, body, _ = post("/v1/chat/completions", b"{not json", raw=True)
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["type"], "invalid_request_error")
        status, body, _ = post("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "many"})
        self.assertEqual(status, 400)
        self.assertIn("max_tokens", body["error"]["message"])
        status, body, _ = post("/v1/chat/completions", {"model": MODEL, "messages": "hi"})
        self.assertEqual(status, 400)
        status, body, _ = post("/v1/completions", {"model": MODEL, "prompt": "x", "n": 2})
        self.assertEqual((status, body["error"]["param"]), (400, "n"))
        status, body, _ = post("/v1/completions", {"model": MODEL, "prompt": "x", "temperature": 9})
        self.assertEqual(status, 400)
        status, body, _ = post("/v1/completions", {"model": MODEL, "prompt": "x", "stop": list("abcde")})
        self.assertEqual((status, body["error"]["param"]), (400, "stop"))
        status, body, _ = post("/v1/completions", {"model": MODEL})
        self.assertEqual((status, body["error"]["param"]), (400, "prompt"))
        with self.assertRaises(openai.NotFoundError) as e:
            client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        self.assertEqual(error_of(e.exception)["code"], "model_not_found")
        with self.assertRaises(openai.BadRequestError) as e:
            client.completions.create(model=MODEL, prompt="word " * 400, max_tokens=1)
        message = error_of(e.exception)["message"]
        self.assertIn("256", message)
        self.assertRegex(message, r"prompt has \d{3} tokens")
        self.assertEqual(error_of(e.exception)["code"], "context_length_exceeded")

    def test_zz_busy_and_dropped_streams_free_every_slot(self):
        # Ten long streams at once for four slots and four queue places: two are refused with
        # 503 and Retry-After.
        def start(_):
            try:
                return client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=200,
                                                 temperature=0, stream=True)
            except openai.APIStatusError as e:
                return e

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            started = list(pool.map(start, range(10)))
        refused = [s for s in started if isinstance(s, openai.APIStatusError)]
        self.assertEqual(len(refused), 2)
        for e in refused:
            self.assertEqual(e.status_code, 503)
            self.assertEqual(e.response.headers.get("retry-after"), "1")
        streams = [s for s in started if not isinstance(s, openai.APIStatusError)]
        # Drop every stream, some after reading a little.
        for i, s in enumerate(streams):
            if i % 2 == 0:
                next(iter(s))
            s.close()

        # Then 200 short requests, half of them dropped after their first chunk.
        def one(i):
            s = client.completions.create(model=MODEL, prompt=f"Request {i}:", max_tokens=6, temperature=0,
                                          stream=True)
            if i % 2:
                next(iter(s))
                s.close()
                return None
            return stream_text(s)[1]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            finishes = [f for f in pool.map(one, range(200)) if f is not None]
        self.assertEqual(finishes, ["length"] * 100)
        import time
        deadline = time.time() + 30
        while True:
            m = metrics()
            idle = (m["kiln_kv_slots_used"], m["kiln_kv_blocks_used"], m["kiln_running_sequences"],
                    m["kiln_queued_requests"]) == (0, 0, 0, 0)
            if idle or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertTrue(idle, m)
        self.assertEqual(m["kiln_kv_slots_free"], 4)
        self.assertEqual(m["kiln_kv_blocks_free"], m["kiln_kv_blocks_total"])
        self.assertGreaterEqual(m['kiln_requests_total{outcome="cancelled"}'], 100)
        self.assertGreater(m["kiln_generation_tokens_total"], 0)
        # The binary counts its own heap (its global allocator) for soak runs to read.
        self.assertGreater(m["kiln_host_heap_bytes"], 0)
        self.assertGreater(m["kiln_resident_memory_bytes"], m["kiln_host_heap_bytes"])


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v", *sys.argv[3:]])
