"""Locust scenario of the aira chat API: people signing up and chatting.

Each simulated user signs up with a unique e-mail, gets an API token, opens a conversation, then
posts messages with think times between them (each POST with an Idempotency-Key) and follows
every answer to its end: the SSE stream GET /v1/messages/{id}/events (default), or polling
GET /v1/conversations/{id} (AIRA_FOLLOW=poll).

Besides Locust's per-request statistics, the scenario counts messages: accepted (202), answered,
failed (the runtime gave up: status `failed`), lost (accepted but neither answered nor failed
within AIRA_ANSWER_TIMEOUT) and rate limited (429). The accepted-to-answered time is reported as
the pseudo-request "ANSWER accepted → answered". With --processes or distributed workers the
counts are summed in the master. At the end they are printed (and written to AIRA_SUMMARY as JSON
when set), and Locust exits 1 when a message was lost or failed. Give users time to finish their
last message with --stop-timeout (e.g. 130 s), or it is counted as in flight at the stop.

Environment:
  AIRA_FOLLOW          sse | poll                      (default sse)
  AIRA_THINK_MIN/MAX   seconds between two messages    (default 5 / 15)
  AIRA_MESSAGES        messages per user, 0 = no limit (default 0)
  AIRA_ANSWER_TIMEOUT  seconds to wait for an answer   (default 120)
  AIRA_PASSWORD        password of the created users   (default a fixed test password)
  AIRA_SUMMARY         path of a JSON summary written at the end

See README.md for how to run it against `aira up --local` and against a deployed stack.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

from locust import FastHttpUser, between, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

FOLLOW = os.environ.get("AIRA_FOLLOW", "sse")
THINK_MIN = float(os.environ.get("AIRA_THINK_MIN", "5"))
THINK_MAX = float(os.environ.get("AIRA_THINK_MAX", "15"))
MESSAGES = int(os.environ.get("AIRA_MESSAGES", "0"))
ANSWER_TIMEOUT = float(os.environ.get("AIRA_ANSWER_TIMEOUT", "120"))
PASSWORD = os.environ.get("AIRA_PASSWORD", "locust-load-test-password")
RUN = uuid.uuid4().hex[:8]

PROMPTS = [
    "What is the capital of France?",
    "Summarise the plot of Hamlet in two sentences.",
    "Give me three ideas for a rainy Sunday.",
    "How do I boil an egg so the yolk stays soft?",
    "Translate 'good morning' into Spanish and German.",
    "Explain what a dead-letter queue is to a new engineer.",
]

COUNTERS = ("accepted", "answered", "failed", "lost", "rate_limited", "post_errors")
counts = dict.fromkeys(COUNTERS, 0)  # this process's counts (reset when sent to the master)
totals = dict.fromkeys(COUNTERS, 0)  # the sum the master (or a single process) reports


def count(name: str, n: int = 1) -> None:
    counts[name] += n
    totals[name] += n


class ChatUser(FastHttpUser):
    wait_time = between(THINK_MIN, THINK_MAX)
    # Answers can take a while: long-lived SSE responses must not hit the client timeout.
    network_timeout = ANSWER_TIMEOUT + 10
    connection_timeout = 30.0

    def on_start(self) -> None:
        self.sent = 0
        email = f"locust-{RUN}-{uuid.uuid4().hex[:12]}@example.com"
        creds = {"email": email, "password": PASSWORD, "keep_history": True}
        self.account("/v1/auth/signup", creds)
        token = self.account("/v1/auth/tokens", creds)
        self.auth = {"Authorization": f"Bearer {token['token']}"}
        with self.client.post(
            "/v1/conversations", headers=self.auth, name="/v1/conversations", catch_response=True
        ) as r:
            if r.status_code != 201:
                r.failure(f"conversation: {r.status_code} {r.text}")
                raise StopUser()
            self.conversation = r.json()["id"]

    def account(self, path: str, creds: dict) -> dict:
        """Signs up or takes a token as a person would: a 503 `busy` (password hashing is
        queued) is waited out for its Retry-After and tried again, up to 10 times; it still
        counts as a failed request in the statistics."""
        for _ in range(10):
            with self.client.post(path, json=creds, name=path, catch_response=True) as r:
                if r.status_code == 201:
                    return r.json()
                r.failure(f"{path}: {r.status_code} {r.text}")
                if r.status_code != 503:
                    raise StopUser()
                wait = float(r.headers.get("Retry-After") or 1)
            time.sleep(wait)
        raise StopUser()

    @task
    def chat(self) -> None:
        if MESSAGES and self.sent >= MESSAGES:
            self.wait()
            return
        self.sent += 1
        message_id = self.post_message(random.choice(PROMPTS))
        if message_id is None:
            return
        accepted_at = time.perf_counter()
        status = self.follow_sse(message_id) if FOLLOW == "sse" else self.follow_poll(message_id)
        elapsed_ms = (time.perf_counter() - accepted_at) * 1000
        if status == "answered":
            count("answered")
            self.environment.events.request.fire(
                request_type="ANSWER",
                name="accepted → answered",
                response_time=elapsed_ms,
                response_length=0,
                exception=None,
                context={},
            )
        elif status == "failed":
            count("failed")
            self.environment.events.request.fire(
                request_type="ANSWER",
                name="accepted → answered",
                response_time=elapsed_ms,
                response_length=0,
                exception=RuntimeError("message failed"),
                context={},
            )
        else:
            count("lost")
            self.environment.events.request.fire(
                request_type="ANSWER",
                name="accepted → answered",
                response_time=elapsed_ms,
                response_length=0,
                exception=RuntimeError(f"no answer within {ANSWER_TIMEOUT:.0f} s ({status})"),
                context={},
            )

    def post_message(self, content: str) -> str | None:
        """POST with an Idempotency-Key; one retry with the same key on a transport error."""
        key = str(uuid.uuid4())
        headers = {**self.auth, "Idempotency-Key": key}
        url = f"/v1/conversations/{self.conversation}/messages"
        for attempt in range(2):
            with self.client.post(
                url,
                json={"content": content},
                headers=headers,
                name="/v1/conversations/{id}/messages",
                catch_response=True,
            ) as r:
                if r.status_code == 202:
                    if r.headers.get("Idempotent-Replayed") != "true":
                        count("accepted")
                    return r.json()["id"]
                if r.status_code == 429:
                    count("rate_limited")
                    r.failure("429 rate limited")
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                    return None
                r.failure(f"{r.status_code} {r.text[:200] if r.text else ''}")
                if r.status_code != 0 or attempt == 1:  # 0: connection error, worth one retry
                    count("post_errors")
                    return None
        return None

    def follow_sse(self, message_id: str) -> str:
        """Reads the event stream until `answered` or `failed`; returns the last status seen."""
        status = "queued"
        deadline = time.monotonic() + ANSWER_TIMEOUT
        with self.client.get(
            f"/v1/messages/{message_id}/events",
            headers={**self.auth, "Accept": "text/event-stream"},
            name="/v1/messages/{id}/events",
            stream=True,
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}")
                return self.follow_poll(message_id)
            event = None
            buffer = b""
            # read() in chunks: the client's readline() splits on CRLF only, SSE lines end in LF.
            while status not in ("answered", "failed") and time.monotonic() < deadline:
                chunk = r.read(4096)
                if not chunk:
                    break  # stream closed
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event in ("queued", "processing", "answered", "failed"):
                        status = event
            r.success()
        if status not in ("answered", "failed") and time.monotonic() < deadline:
            return self.follow_poll(message_id, deadline)  # the stream ended early: check the stored status
        return status

    def follow_poll(self, message_id: str, deadline: float | None = None) -> str:
        """Polls the conversation every second until the message is answered or failed."""
        deadline = deadline or time.monotonic() + ANSWER_TIMEOUT
        status = "queued"
        while time.monotonic() < deadline:
            with self.client.get(
                f"/v1/conversations/{self.conversation}",
                headers=self.auth,
                name="/v1/conversations/{id}",
                catch_response=True,
            ) as r:
                if r.status_code == 200:
                    for m in r.json().get("messages", []):
                        if m.get("id") == message_id:
                            status = m.get("status", status)
                else:
                    r.failure(f"{r.status_code}")
            if status in ("answered", "failed"):
                return status
            time.sleep(1.0)
        return status


# --- message counts across processes --------------------------------------------------------------
@events.report_to_master.add_listener
def _send_counts(client_id, data):
    data["aira_counts"] = dict(counts)
    for k in counts:
        counts[k] = 0


@events.worker_report.add_listener
def _add_counts(client_id, data):
    for k, v in data.get("aira_counts", {}).items():
        totals[k] += v


@events.quitting.add_listener
def _report(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner):
        return
    summary = dict(totals)
    # Accepted but neither answered, failed nor given up on: still in flight when the run stopped
    # (give users time to finish with --stop-timeout to make this 0).
    summary["in_flight_at_stop"] = summary["accepted"] - summary["answered"] - summary["failed"] - summary["lost"]
    print("aira messages: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    path = os.environ.get("AIRA_SUMMARY")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    if summary["lost"] or summary["failed"]:
        environment.process_exit_code = 1
