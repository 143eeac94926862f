"""Black-box check with the official `openai` Python client against `inferno serve`.

Starts the built binary on a free port with the model given as argv[2], talks to it only through
the `openai` package (non-streaming, streaming with usage, text completions, model listing,
and an error), then stops it with SIGTERM and expects exit status 0.

Usage: python3 tests/openai_client.py target/release/inferno /path/to/model.gguf
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

import openai


def start_server(binary, model):
    env = dict(os.environ, NO_COLOR="1", INFERNO_LOG="info")
    # An empty models dir, so that only `model` is served (the cache holds other models).
    models_dir = tempfile.mkdtemp(prefix="inferno-openai-")
    proc = subprocess.Popen(
        [binary, "serve", "--port", "0", "--ctx-size", "1024", "--parallel", "2", "--model", model,
         "--models-dir", models_dir],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    address = None
    for line in proc.stderr:
        match = re.search(r"address=(\S+)", line)
        if match:
            address = match.group(1)
            break
    if address is None:
        raise SystemExit("server exited before logging its address")
    # Keep reading the log so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, address


def main():
    binary, model_path = sys.argv[1], sys.argv[2]
    proc, address = start_server(binary, model_path)
    results = []

    def check(name, ok, detail=""):
        results.append((name, ok))
        if not ok:
            print(f"FAIL {name}: {detail}")

    try:
        client = openai.OpenAI(base_url=f"http://{address}/v1", api_key="unused", max_retries=20)
        model = os.path.basename(model_path).removesuffix(".gguf")
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ]

        # The server answers 503 + Retry-After while loading; the client's retries wait for it.
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=30, temperature=0)
        text = reply.choices[0].message.content
        check("chat answers", "Paris" in text and reply.choices[0].finish_reason == "stop", reply)
        usage = reply.usage
        check("chat usage", usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage)

        chunks = list(
            client.chat.completions.create(
                model=model, messages=messages, max_tokens=30, temperature=0,
                stream=True, stream_options={"include_usage": True},
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        check("stream text", streamed == text, f"{streamed!r} != {text!r}")
        last = chunks[-1].usage
        check("stream usage", last is not None and last.completion_tokens == usage.completion_tokens, chunks[-1])

        completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=5, temperature=0)
        check("text completion", "Paris" in completion.choices[0].text, completion)

        ids = [m.id for m in client.models.list()]
        check("models list", ids == [model], ids)

        try:
            client.chat.completions.create(model=model, messages=messages, n=2)
            check("n=2 rejected", False, "accepted")
        except openai.BadRequestError as err:
            check("n=2 rejected", err.body.get("param") == "n", err.body)
        try:
            client.chat.completions.create(model="no-such-model", messages=messages)
            check("unknown model is 404", False, "accepted")
        except openai.NotFoundError:
            check("unknown model is 404", True)
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
    check("SIGTERM exits 0", status == 0, status)
    failed = sum(1 for _, ok in results if not ok)
    print(f"openai: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
