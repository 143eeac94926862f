#!/usr/bin/env python3
"""Three-replica drain test: 3 `inferno serve` processes behind HAProxy, a bounded
`inferno bench` load through the load balancer, SIGTERM to one replica mid-load.

Asserts:
  * bench reports 0 failed requests (a stream cut mid-way counts as failed in bench: "stream
    ended before the response finished"), and every request completed;
  * the drained replica had streams in flight when it got SIGTERM, answered /ready with 503
    while still serving, and exited 0 within --shutdown-delay-secs + --shutdown-grace-secs;
  * a long stream sent straight to that replica just before SIGTERM arrives whole (every token,
    finish_reason, usage, [DONE]), although the replica closes its listener while it runs;
  * the load balancer marked it down through its /ready health check;
  * the survivors keep serving: a request through the load balancer and one to each survivor
    after the drain succeed.

Usage: tests/replicas/run.py [INFERNO_BIN] [MODEL_PATH]
  INFERNO_BIN defaults to $INFERNO_BIN, then target/release/inferno.
  MODEL_PATH defaults to $INFERNO_MODEL, then the default model in ~/.cache/inferno/models.
Knobs (environment): REPLICA_TEST_DELAY_SECS (2), REPLICA_TEST_GRACE_SECS (30),
REPLICA_TEST_CONCURRENCY (6), REPLICA_TEST_REQUESTS (30), REPLICA_TEST_MAX_TOKENS (40),
REPLICA_TEST_DIRECT_TOKENS (120), REPLICA_TEST_KEEP_LOGS (keep the logs of a passing run).
Installs haproxy with apt-get when it is missing and we are root. Python stdlib only.
Everything it starts runs on 127.0.0.1 and is stopped before it exits.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPLICAS = 3
DELAY_SECS = int(os.environ.get("REPLICA_TEST_DELAY_SECS", "2"))
GRACE_SECS = int(os.environ.get("REPLICA_TEST_GRACE_SECS", "30"))
CONCURRENCY = int(os.environ.get("REPLICA_TEST_CONCURRENCY", "6"))
REQUESTS = int(os.environ.get("REPLICA_TEST_REQUESTS", "30"))
MAX_TOKENS = int(os.environ.get("REPLICA_TEST_MAX_TOKENS", "40"))
# A stream sent straight to the drained replica: long enough to outlive the shutdown delay.
DIRECT_TOKENS = int(os.environ.get("REPLICA_TEST_DIRECT_TOKENS", "120"))
# Generous: the machine is shared; a nominal run takes ~40 s.
BENCH_TIMEOUT = 150
DEADLINE = time.monotonic() + 240  # hard cap on the whole test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg):
    print(f"[replicas {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg):
    raise AssertionError(msg)


def find_haproxy():
    for path in (shutil.which("haproxy"), "/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if path and os.access(path, os.X_OK):
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing haproxy with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "haproxy"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        return "/usr/sbin/haproxy"
    fail("haproxy is not installed (apt-get install haproxy)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=10):
    """(status, body text); status 0 when the connection failed."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
        return 0, str(e)


def stream_chat(base_url, model, max_tokens, result):
    """Streams one chat completion and records what arrived: status, chunks, finish reason,
    whether `data: [DONE]` came, usage, and when the last byte arrived (monotonic)."""
    import http.client
    from urllib.parse import urlparse
    u = urlparse(base_url)
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me a long story about the sea."}]}
    result.update(status=0, chunks=0, finish_reason=None, done=False, usage=None, error=None, end=None)
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        result["status"] = resp.status
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                result["done"] = True
                continue
            chunk = json.loads(data)
            if chunk.get("error"):
                result["error"] = chunk["error"]
            for choice in chunk.get("choices", []):
                result["chunks"] += 1
                result["finish_reason"] = choice.get("finish_reason") or result["finish_reason"]
            result["usage"] = chunk.get("usage") or result["usage"]
        conn.close()
    except Exception as e:  # noqa: BLE001 - reported as the stream's failure
        result["error"] = f"{type(e).__name__}: {e}"
    result["end"] = time.monotonic()


def wait_for(what, predicate, timeout):
    end = min(time.monotonic() + timeout, DEADLINE)
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    fail(f"timed out waiting for {what}")


class Replica:
    def __init__(self, name, binary, model, workdir):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log_file = open(self.log_path, "w")
        args = [binary, "--log-format", "json", "serve", "--model", model,
                "--host", "127.0.0.1", "--port", "0",
                "--threads", "1", "--threads-batch", "1", "--parallel", "4", "--ctx-size", "512",
                "--shutdown-delay-secs", str(DELAY_SECS), "--shutdown-grace-secs", str(GRACE_SECS)]
        env = dict(os.environ, INFERNO_LOG="info", OMP_WAIT_POLICY="passive")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT, env=env)
        self.port = None

    def log_lines(self):
        with open(self.log_path) as f:
            out = []
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"raw": line.rstrip()})
            return out

    def find_port(self):
        if self.proc.poll() is not None:
            fail(f"{self.name} exited early with {self.proc.returncode}; log:\n{self.tail()}")
        for entry in self.log_lines():
            fields = entry.get("fields", entry)
            address = fields.get("address")
            if address and "listening" in str(fields.get("message", "")):
                self.port = int(address.rsplit(":", 1)[1])
                return True
        return False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def running(self):
        status, body = http("GET", self.url + "/status", timeout=2)
        if status != 200:
            return None
        return sum((m.get("engine") or {}).get("slots_busy", 0) for m in json.loads(body)["models"])

    def tail(self, n=30):
        """The last n log lines of Inferno itself and its HTTP layer (not llama.cpp's)."""
        with open(self.log_path) as f:
            lines = [line for line in f if '"target":"llama-cpp-2"' not in line]
        return "".join(lines[-n:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


def haproxy_config(lb_port, stats_sock, replicas):
    servers = "\n".join(
        f"    server {r.name} 127.0.0.1:{r.port} check inter 500ms fastinter 250ms fall 2 rise 2"
        for r in replicas)
    return f"""global
    maxconn 512
    stats socket {stats_sock} mode 600 level admin

defaults
    mode http
    log global
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-request 10s
    # A connection refused / reset before any response byte, or an idle keep-alive connection
    # closed under us, is retried on another replica; nothing else is.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend api
    bind 127.0.0.1:{lb_port}
    default_backend inferno

backend inferno
    balance leastconn
    option httpchk GET /ready
    http-check expect status 200
{servers}
"""


def haproxy_stats(stats_sock):
    """{server name: row dict} from `show stat`."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(stats_sock)
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = {}
    for line in lines[1:]:
        if line:
            row = dict(zip(header, line.split(",")))
            rows[row["svname"]] = row
    return rows


def main():
    binary = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("INFERNO_BIN") \
        or os.path.join(ROOT, "target/release/inferno")
    model = (sys.argv[2] if len(sys.argv) > 2 else None) or os.environ.get("INFERNO_MODEL") \
        or os.path.expanduser("~/.cache/inferno/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    for path in (binary, model):
        if not os.path.exists(path):
            fail(f"not found: {path}")
    haproxy = find_haproxy()
    workdir = tempfile.mkdtemp(prefix="inferno-replicas-")
    keep_logs = False
    replicas, procs = [], []
    try:
        replicas = [Replica(f"r{i}", binary, model, workdir) for i in range(1, REPLICAS + 1)]
        for r in replicas:
            wait_for(f"{r.name} to listen", r.find_port, 30)
        for r in replicas:
            wait_for(f"{r.name} /ready", lambda r=r: http("GET", r.url + "/ready", timeout=2)[0] == 200, 60)
        log("replicas ready: " + ", ".join(f"{r.name}={r.url}" for r in replicas))

        lb_port = free_port()
        stats_sock = os.path.join(workdir, "haproxy.sock")
        cfg = os.path.join(workdir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(haproxy_config(lb_port, stats_sock, replicas))
        lb_log = open(os.path.join(workdir, "haproxy.log"), "w")
        lb = subprocess.Popen([haproxy, "-f", cfg, "-db"], stdout=lb_log, stderr=subprocess.STDOUT)
        procs.append(lb)
        lb_url = f"http://127.0.0.1:{lb_port}"

        def all_up():
            if lb.poll() is not None:
                fail(f"haproxy exited with {lb.returncode}")
            try:
                rows = haproxy_stats(stats_sock)
            except OSError:
                return False
            return all(rows.get(r.name, {}).get("status") == "UP" for r in replicas)
        wait_for("haproxy to see every replica UP", all_up, 20)
        log(f"haproxy on {lb_url}, all {REPLICAS} replicas UP")

        bench_json = os.path.join(workdir, "bench.json")
        bench_args = [binary, "bench", "--url", lb_url + "/v1", "--concurrency", str(CONCURRENCY),
                      "--requests", str(REQUESTS), "--max-tokens", str(MAX_TOKENS), "--ignore-eos",
                      "--prompt-tokens", "32", "--timeout", str(BENCH_TIMEOUT), "--warmup", "0",
                      "--json", bench_json]
        bench_log = open(os.path.join(workdir, "bench.log"), "w")
        bench = subprocess.Popen(bench_args, stdout=bench_log, stderr=subprocess.STDOUT)
        procs.append(bench)
        started = time.monotonic()

        # Drain the first replica as soon as it holds streams in flight: they started at most
        # ~1 s ago, so they outlive the delay and finish after the listener has closed.
        victim, survivors = replicas[0], replicas[1:]
        time.sleep(0.5)
        in_flight = wait_for(f"{victim.name} to hold running requests", victim.running, 20)
        if bench.poll() is not None:
            fail("bench finished before the drain started; raise REPLICA_TEST_REQUESTS")
        # Plus one long stream straight to the victim, which must outlive its listener.
        import threading
        direct = {}
        model_id = json.loads(http("GET", victim.url + "/v1/models")[1])["data"][0]["id"]
        direct_thread = threading.Thread(target=stream_chat, daemon=True,
                                         args=(victim.url, model_id, DIRECT_TOKENS, direct))
        direct_thread.start()
        wait_for("the direct stream's first token",
                 lambda: direct.get("chunks", 0) > 0 or direct.get("error") or direct.get("end"), 15)
        victim.proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        log(f"SIGTERM to {victim.name} at +{t_term - started:.1f}s with {in_flight} streams in flight")

        # The signal is handled asynchronously: /ready must turn 503 well within the delay, while
        # the replica still serves.
        wait_for(f"{victim.name} /ready to answer 503 after SIGTERM",
                 lambda: http("GET", victim.url + "/ready", timeout=2)[0] == 503, DELAY_SECS)
        log(f"{victim.name} /ready answered 503 {time.monotonic() - t_term:.2f}s after SIGTERM")

        def marked_down():
            row = haproxy_stats(stats_sock).get(victim.name, {})
            return row.get("status", "").startswith("DOWN") and row["status"]
        down = wait_for("haproxy to mark the drained replica DOWN", marked_down, DELAY_SECS + 2)
        t_down = time.monotonic()
        log(f"haproxy marked {victim.name} {down} {t_down - t_term:.1f}s after SIGTERM")

        budget = DELAY_SECS + GRACE_SECS
        # Not fatal at once: the load and the direct stream still finish and are reported.
        late = None
        try:
            code = victim.proc.wait(timeout=max(1, min(budget + 2, DEADLINE - time.monotonic())))
            t_exit = time.monotonic()
            log(f"{victim.name} exited with {code} {t_exit - t_term:.1f}s after SIGTERM "
                f"(delay {DELAY_SECS}s + grace {GRACE_SECS}s allowed)")
        except subprocess.TimeoutExpired:
            late = f"{victim.name} still running {budget + 2}s after SIGTERM (delay {DELAY_SECS}s + grace {GRACE_SECS}s)"
            log(late)
            code, t_exit = None, None

        try:
            bench.wait(timeout=max(1, DEADLINE - time.monotonic()))
        except subprocess.TimeoutExpired:
            fail("bench did not finish in time")
        if late:
            direct_thread.join(timeout=max(1, DEADLINE - time.monotonic()))
            try:
                rc = victim.proc.wait(timeout=5)
                # When, by the server's own log: from the shutdown line to "stopped".
                stamps = {e.get("fields", {}).get("message"): e.get("timestamp") for e in victim.log_lines()}
                begin = next((v for k, v in stamps.items() if k and k.startswith("shutting down")), None)
                end = stamps.get("stopped")
                took = ""
                if begin and end:
                    from datetime import datetime
                    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))
                    took = f", {(parse(end) - parse(begin)).total_seconds():.1f}s after SIGTERM (server log)"
                log(f"{victim.name} exited later, with {rc}{took}")
            except subprocess.TimeoutExpired:
                log(f"{victim.name} still running {time.monotonic() - t_term:.1f}s after SIGTERM")
        with open(bench_json) as f:
            report = json.load(f)
        level = report["levels"][0]
        sent, ok, errors = level["requests"], level["ok"], level["errors"]
        print(f"requests sent: {sent}  completed: {ok}  failed: {errors}  "
              f"(bench wall {level['wall_s']:.1f}s, {level['gen_tokens_per_s']:.0f} gen tok/s)", flush=True)
        for reason in level.get("error_reasons", []):
            print(f"  failure x{reason['count']}: {reason['message']}", flush=True)

        direct_thread.join(timeout=max(1, DEADLINE - time.monotonic()))
        listener_closed = t_term + DELAY_SECS
        log(f"direct stream to {victim.name}: HTTP {direct.get('status')}, {direct.get('chunks')} chunks, "
            f"finish_reason {direct.get('finish_reason')}, [DONE] {direct.get('done')}, "
            f"completion_tokens {(direct.get('usage') or {}).get('completion_tokens')}, "
            f"ended {direct['end'] - t_term:.1f}s after SIGTERM" if direct.get("end") else "direct stream did not end")

        # What the drained replica finished after SIGTERM (the streams it drained).
        victim_lines = victim.log_lines()
        def finished_after(marker):
            start = next((i for i, e in enumerate(victim_lines)
                          if marker in str(e.get("fields", {}).get("message", ""))), None)
            if start is None:
                return 0
            return sum(1 for e in victim_lines[start:]
                       if e.get("fields", {}).get("message") == "generation finished")
        drained = finished_after("/ready now answers 503")
        after_close = finished_after("no new connections")
        log(f"{victim.name} finished {drained} generations after SIGTERM, "
            f"{after_close} of them after its listener closed")

        rows = haproxy_stats(stats_sock)
        per_server = {r.name: int(rows[r.name]["stot"]) for r in replicas}
        backend = rows.get("BACKEND", {})
        log(f"haproxy sessions per replica: {per_server}; retries {backend.get('wretr')}, "
            f"redispatches {backend.get('wredis')}, 5xx {backend.get('hrsp_5xx')}")

        # Survivors keep serving.
        probe = {"model": report["model"], "max_tokens": 8,
                 "messages": [{"role": "user", "content": "Say hi."}]}
        after = [("load balancer", http("POST", lb_url + "/v1/chat/completions", probe, timeout=30))]
        after += [(r.name, http("POST", r.url + "/v1/chat/completions", probe, timeout=30)) for r in survivors]
        for name, (status, body) in after:
            log(f"after the drain, {name}: HTTP {status}")

        problems = [late] if late else []
        if errors != 0 or ok != sent or sent != REQUESTS:
            problems.append(f"bench: {errors} failed, {ok}/{sent} completed of {REQUESTS}")
        if late is None and code != 0:
            problems.append(f"{victim.name} exited with {code}")
        if t_exit is not None and t_exit - t_term > budget:
            problems.append(f"{victim.name} took {t_exit - t_term:.1f}s > {budget}s to exit")
        if (direct.get("status") != 200 or direct.get("error") or not direct.get("done")
                or direct.get("finish_reason") != "length"
                or (direct.get("usage") or {}).get("completion_tokens") != DIRECT_TOKENS):
            problems.append(f"the direct stream to the drained replica was cut or failed: {direct}")
        if drained < 1:
            problems.append(f"{victim.name} finished no generation after SIGTERM: nothing was drained")
        if after_close < 1 or (direct.get("end") or 0) < listener_closed:
            print(f"WARNING: no stream outlived {victim.name}'s listener ({after_close} finished after it "
                  f"closed), so the grace phase was not exercised; this machine is faster than the "
                  f"test assumes: raise REPLICA_TEST_DIRECT_TOKENS", flush=True)
        for name, (status, body) in after:
            if status != 200:
                problems.append(f"request to {name} after the drain: HTTP {status}: {body[:200]}")
        for r in survivors:
            if r.proc.poll() is not None:
                problems.append(f"survivor {r.name} exited with {r.proc.returncode}")
        if problems:
            fail("; ".join(problems))
        print("1 passed, 0 failed", flush=True)
        return 0
    except AssertionError as e:
        keep_logs = True
        print(f"FAILED: {e}", flush=True)
        print(f"logs kept in {workdir}", flush=True)
        for r in replicas:
            tail = "".join(line[:400] + ("...\n" if len(line) > 400 else "") for line in r.tail(10).splitlines(True))
            print(f"--- {r.name} (last lines, cut at 400 characters) ---\n{tail}", flush=True)
        print("0 passed, 1 failed", flush=True)
        return 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for r in replicas:
            r.stop()
        if not keep_logs and not os.environ.get("REPLICA_TEST_KEEP_LOGS"):
            shutil.rmtree(workdir, ignore_errors=True)
        elif not keep_logs:
            print(f"logs kept in {workdir}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
