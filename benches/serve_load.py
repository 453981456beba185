#!/usr/bin/env python3
"""Load generator for kiln-server (or any OpenAI-compatible server, such as llama-server).

N concurrent clients each send R chat requests, streamed, with a shared system prompt and a
fixed mix of question and answer lengths. Reports aggregate throughput (generated tokens/s), time
to first token and time between tokens (p50/p99), and, from kiln-server's /metrics, the KV
blocks held at the peak (in positions) beside the positions a contiguous cache reserves (every
slot's whole context), and the share of prompt tokens served from cached prefix blocks.

    cargo build --release -p kiln-server
    python3 benches/serve_load.py --clients 1 4 16 64            # starts target/release/kiln-server
    python3 benches/serve_load.py --url http://127.0.0.1:8080 --model NAME --clients 4
    python3 benches/serve_load.py --soak 2000      # short requests, a third cancelled; RSS and Rust heap
    python3 benches/serve_load.py --prefix-ttft 500 --server-args "--ctx-size 1024"
        # time to first token with a 500-token system prompt, uncached and then cached

Needs the `openai` package (pip install openai).
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai

SYSTEM = (
    "You are a helpful assistant for a small bakery. Answer briefly and politely. The bakery opens at "
    "seven, closes at six, sells bread, pastries and cakes, and takes orders for weddings a week ahead."
)
QUESTIONS = [
    "When do you open?",
    "Do you sell croissants, and are they baked fresh every morning or the evening before?",
    "I would like to order a three-tier wedding cake with lemon sponge and raspberry filling for two hundred guests next month. What do you need from me?",
    "Hi!",
]
ANSWER_TOKENS = [16, 32, 64, 24]


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def kv_gauges(url):
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except Exception:
        return None
    vals = dict(re.findall(r"^(kiln_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M))
    return {k: float(v) for k, v in vals.items()}


def one_request(client, model, i):
    q = QUESTIONS[i % len(QUESTIONS)]
    n = ANSWER_TOKENS[i % len(ANSWER_TOKENS)]
    start = time.perf_counter()
    stamps = []
    usage = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
        max_tokens=n,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if any(c.delta.content for c in chunk.choices):
            stamps.append(time.perf_counter())
    tokens = usage.completion_tokens if usage else len(stamps)
    ttft = stamps[0] - start if stamps else float("nan")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return ttft, gaps, tokens


def run_level(url, model, clients, per_client):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    peak = {"used": 0.0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            g = kv_gauges(url)
            if g:
                peak["used"] = max(peak["used"], g.get("kiln_kv_positions_used", 0.0))
                blocks = g.get("kiln_kv_blocks_used", 0.0) * g.get("kiln_kv_block_size", 0.0)
                peak["blocks"] = max(peak.get("blocks", 0.0), blocks)
                peak["contiguous"] = g.get("kiln_kv_contiguous_positions", 0.0)
                peak["bytes"] = g.get("kiln_kv_cache_bytes", 0.0)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    before = kv_gauges(url) or {}
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        jobs = [pool.submit(one_request, client, model, c * per_client + r)
                for c in range(clients) for r in range(per_client)]
        results = [j.result() for j in jobs]
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    after = kv_gauges(url) or {}
    tokens = sum(r[2] for r in results)
    ttfts = [r[0] for r in results]
    gaps = [g for r in results for g in r[1]]
    prompt = after.get("kiln_prompt_tokens_total", 0) - before.get("kiln_prompt_tokens_total", 0)
    cached = after.get("kiln_prefix_cached_tokens_total", 0) - before.get("kiln_prefix_cached_tokens_total", 0)
    preempted = after.get("kiln_preemptions_total", 0) - before.get("kiln_preemptions_total", 0)
    return {
        "clients": clients,
        "requests": len(results),
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "ttft_p50_ms": pct(ttfts, 50) * 1e3,
        "ttft_p99_ms": pct(ttfts, 99) * 1e3,
        "tbt_p50_ms": pct(gaps, 50) * 1e3,
        "tbt_p99_ms": pct(gaps, 99) * 1e3,
        "kv_positions_peak": peak.get("used", 0),
        "kv_block_positions_peak": peak.get("blocks", 0),
        "kv_contiguous_positions": peak.get("contiguous", 0),
        "kv_cache_mb": peak.get("bytes", 0) / 1e6,
        "prefix_hit": cached / prompt if prompt else 0.0,
        "preemptions": preempted,
    }


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024
    except (OSError, AttributeError):
        return float("nan")


def soak(url, model, n, pid):
    """n short streamed requests from 16 clients, every third dropped after its first chunk."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)

    def one(i):
        s = client.completions.create(model=model, prompt=f"Note {i}: the", max_tokens=4, temperature=0, stream=True)
        for k, _ in enumerate(s):
            if i % 3 == 0 and k == 0:
                s.close()
                break

    marks = []
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        for done, _ in enumerate(pool.map(one, range(n))):
            if (done + 1) % max(1, n // 10) == 0 or done == n - 1:
                g = kv_gauges(url) or {}
                heap = g.get("kiln_host_heap_bytes", float("nan")) / 1e6
                marks.append((done + 1, rss_mb(pid) if pid else float("nan"), heap,
                              g.get("kiln_bind_groups_cached", float("nan")),
                              g.get("kiln_pipelines_compiled", float("nan"))))
    # Dropped streams are noticed at the server's next write: give the last ones a moment.
    for _ in range(50):
        g = kv_gauges(url) or {}
        if g.get("kiln_running_sequences", 0) == 0 and g.get("kiln_queued_requests", 0) == 0:
            break
        time.sleep(0.1)
    cancelled = g.get('kiln_requests_total{outcome="cancelled"}', float("nan"))
    print(f"soak: {n} requests in {time.perf_counter() - start:.1f} s; server RSS (Rust heap; bind groups, pipelines) "
          + ", ".join(f"{mb:.1f} MB ({heap:.2f} MB; {groups:.0f} bind groups, {pipes:.0f} pipelines) "
                      f"after {k}" for k, mb, heap, groups, pipes in marks)
          + f"; slots used {g.get('kiln_kv_slots_used', float('nan')):.0f}, "
          f"blocks used {g.get('kiln_kv_blocks_used', float('nan')):.0f}, "
          f"cancelled {cancelled:.0f}")


def prefix_ttft(url, model, tokens, rounds=3):
    """Time to first token for a request whose long system prompt no request sent before, then
    for one with the same system prompt and another question (its blocks cached)."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    words = ["bread", "flour", "oven", "crust", "rye", "yeast", "honey", "salt", "butter", "seed"]

    def ttft(system, question):
        start = time.perf_counter()
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_tokens=4, temperature=0, stream=True)
        first = None
        for chunk in stream:
            if first is None and any(c.delta.content for c in chunk.choices):
                first = time.perf_counter() - start
        return first

    ratios = []
    for r in range(rounds):
        # A system prompt of about `tokens` tokens (one word each), new to the server each round.
        nonce = f"{time.time_ns()}-{r}"
        system = f"Bakery notes {nonce}: " + " ".join(words[(i * 7 + r) % len(words)] for i in range(tokens))
        cold = ttft(system, "When do you open?")
        warm = ttft(system, "Do you sell rye bread?")
        ratios.append(cold / warm)
        print(f"round {r}: TTFT uncached {cold * 1e3:.0f} ms, cached {warm * 1e3:.0f} ms: {cold / warm:.1f}x")
    print(f"prefix sharing cuts time to first token by {statistics.median(ratios):.1f}x (median of {rounds})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start target/release/kiln-server)")
    ap.add_argument("--model", help="model name (default: the server's first)")
    ap.add_argument("--server", default="target/release/kiln-server")
    ap.add_argument("--server-args", default="--max-batch 8 --ctx-size 512",
                    help="arguments for the started server")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--json", action="store_true", help="print one JSON object per level")
    ap.add_argument("--soak", type=int, help="instead: this many short requests, a third cancelled")
    ap.add_argument("--prefix-ttft", type=int, metavar="TOKENS",
                    help="instead: time to first token with a TOKENS-long system prompt, uncached then cached")
    a = ap.parse_args()

    server = None
    url = a.url
    if url is None:
        server = subprocess.Popen([a.server, "--port", "0", *a.server_args.split()],
                                  stdout=subprocess.PIPE, text=True)
        for line in server.stdout:
            if line.startswith("kiln-server: listening on "):
                url = line.split()[-1]
                break
        if url is None:
            sys.exit("the server did not start")
    try:
        model = a.model or openai.OpenAI(base_url=url + "/v1", api_key="unused").models.list().data[0].id
        if a.soak:
            soak(url, model, a.soak, server.pid if server else None)
            return
        if a.prefix_ttft:
            prefix_ttft(url, model, a.prefix_ttft)
            return
        if not a.json:
            print(f"{'clients':>7} {'reqs':>5} {'tok/s':>8} {'TTFT p50':>9} {'p99':>8} {'TBT p50':>8} "
                  f"{'p99':>8} {'KV blocks peak/contiguous':>26} {'prefix hit':>10} {'preempted':>9}")
        for n in a.clients:
            r = run_level(url, model, n, a.requests)
            if a.json:
                print(json.dumps(r))
            else:
                print(f"{n:>7} {r['requests']:>5} {r['tokens_per_s']:>8.1f} {r['ttft_p50_ms']:>7.0f}ms "
                      f"{r['ttft_p99_ms']:>6.0f}ms {r['tbt_p50_ms']:>6.1f}ms {r['tbt_p99_ms']:>6.1f}ms "
                      f"{r['kv_block_positions_peak']:>12.0f}/{r['kv_contiguous_positions']:<13.0f} {r['prefix_hit']:>9.0%} {r['preemptions']:>9.0f}")
            sys.stdout.flush()
    finally:
        if server:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
