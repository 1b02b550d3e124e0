"""The PRM on its own servers: scores equal the local PRM's, and slow, failing, dead or wrong servers give the
documented outcome within the deadline. Real HTTP on 127.0.0.1 against a server that answers vLLM's pooling
protocol with the tiny PRM (reasonflux_rl.prm.placement.pooling_server)."""

import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from health_stub import StubServer, rows_for_each_input
from test_prm_scorer import PROBLEM, random_completion

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm.checkpoint import PRMCheckpointError
from reasonflux_rl.prm.placement.pooling_client import PoolingClient, PRMServerError, PRMUnavailableError
from reasonflux_rl.prm.placement.pooling_server import PoolingServer
from reasonflux_rl.prm.placement.remote import inspect_served_checkpoint
from reasonflux_rl.rewards.build import validate
from reasonflux_rl.rewards.config import RewardArguments, reward_arguments_from_env
from reasonflux_rl.rewards.prm import MixedReward

REPO = Path(__file__).resolve().parents[1]
# Per-attempt limit where a test does not test timeouts: far beyond what the tiny PRM takes on a loaded machine, so
# that no attempt times out (and is retried, or fails) because the machine was busy.
SLOW_OK = 60.0


@pytest.fixture
def refused_url():
    """A loopback address whose connections are refused. The socket stays bound (not listening) for the whole test:
    a port that was only probed and released could be taken by another process in between."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class Gauge:
    """Requests being answered right now, and the most at once, over one or more servers.

    Once ``gate`` is set, each request waits until ``gate`` requests are in at once (then all go on, and the gate
    opens for good): whether requests overlap then depends on the client alone, not on how fast a loaded machine
    answers. A gate not reached within 60 s opens anyway, and the test fails on ``most``.
    """

    def __init__(self):
        self.now = self.most = 0
        self.gate: int | None = None
        self.lock = threading.Condition()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            if self.gate is not None and self.now < self.gate:
                self.lock.wait_for(lambda: self.gate is None, timeout=60)
            self.gate = None
            self.lock.notify_all()

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


class FaultyServer(PoolingServer):
    """Answers with ``faults`` (one per request, in order) before answering normally."""

    def __init__(self, *args, faults=(), delay=0.0, gauge=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = list(faults)
        self.delay = delay
        self.gauge = gauge or Gauge()
        self.stopping = threading.Event()

    def stop(self):
        self.stopping.set()  # ends injected waits, so closing does not wait them out
        super().stop()

    def answer(self, request):
        with self.gauge:
            with self.gauge.lock:
                fault = self.faults.pop(0) if self.faults else None
            if self.delay:
                time.sleep(self.delay)
            if fault == "500":
                return 500, {"error": {"message": "boom", "code": 500}}
            if fault == "400":
                return 400, {"error": {"message": "bad request", "code": 400}}
            if fault == "garbage":
                return 200, b"{not json"
            if isinstance(fault, float):
                self.stopping.wait(fault)
            status, body = super().answer(request)
            if fault == "drop_row":
                body["data"][0]["data"] = body["data"][0]["data"][:-1]
            return status, body


@pytest.fixture(scope="module")
def pairs():
    rng = random.Random(7)
    completions = [random_completion(rng, rng.choice([1, 3, 12]), rng.choice([1, 2])) for _ in range(10)]
    return [PROBLEM] * len(completions), completions


@pytest.fixture(scope="module")
def server(tiny_models):
    with PoolingServer(tiny_models.prm, model_name="tiny-prm") as running:
        yield running


def remote(prm, urls, **options):
    options = {"retries": 1, "request_timeout": SLOW_OK, "deadline": 4 * SLOW_OK, **options}
    return load_scorer(prm, server_urls=urls, **options)


@pytest.mark.parametrize(
    "options",
    [{}, {"batch_tokens": 300}, {"max_length": 200}, {"max_length": 200, "truncation": "windows"},
     {"parts": "response", "max_steps": 2}],
    ids=["default", "small-requests", "drop-oldest", "windows", "response-parts"],
)
def test_remote_scores_equal_local_scores(tiny_models, server, pairs, options):
    local = load_scorer(tiny_models.prm, device="cpu", **options).score(*pairs)
    scorer = remote(tiny_models.prm, [server.url], **options)
    try:
        got = scorer.score(*pairs)
    finally:
        scorer.close()
    for r, expected in zip(got, local):
        assert r.step_indices == expected.step_indices
        # The character spans dense credit places on the policy's tokens come out of a remote PRM too.
        assert r.step_spans == expected.step_spans and len(r.step_spans) == len(r.step_scores)
        assert (r.num_steps, r.dropped_steps) == (expected.num_steps, expected.dropped_steps)
        assert r.step_scores == pytest.approx(expected.step_scores, abs=1e-5)
    if "max_length" in options:
        assert any(r.dropped_steps for r in got) or options.get("truncation") == "windows"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_reference_server_refuses_a_body_that_is_not_declared_json(server, content_type):
    import http.client
    from urllib.parse import urlsplit

    body = json.dumps({"model": server.model_name, "input": [[1, 2]], "task": "token_classify"}).encode()

    def post(headers: dict) -> tuple[int, dict]:
        # http.client sends exactly these headers (urllib would add a form content type to a bare POST).
        connection = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=10)
        try:
            connection.request("POST", "/pooling", body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read())
        finally:
            connection.close()

    status, answer = post({} if content_type is None else {"Content-Type": content_type})
    assert status == 400
    assert answer["error"]["message"] == "Unsupported Media Type: Only 'application/json' is allowed"
    status, answer = post({"Content-Type": "application/json; charset=utf-8"})
    assert status == 200 and len(answer["data"]) == 1


def test_requests_are_spread_over_servers_within_the_inflight_bound(tiny_models, pairs):
    gauge = Gauge()
    with FaultyServer(tiny_models.prm, delay=0.05, gauge=gauge) as one, \
            FaultyServer(tiny_models.prm, delay=0.05, gauge=gauge) as two:
        scorer = remote(tiny_models.prm, [one.url, two.url], max_inflight=3, batch_tokens=100)
        probes = one.requests + two.requests
        gauge.gate = 3  # after the start-up probes, which go one at a time
        try:
            scorer.score(*pairs)
        finally:
            scorer.close()
    assert probes == 2
    assert one.requests > 2 and two.requests > 2
    # Requests overlap (the gate opens only at 3), and never more than the bound: the delay after the gate gives
    # a client that ignored the bound time to send a fourth.
    assert gauge.most == 3


def test_inflight_bound_of_the_job_is_shared_by_the_ranks(tiny_models):
    args = RewardArguments(prm_name_or_path=str(tiny_models.prm), prm_server_urls=["http://x:1"],
                           prm_server_max_inflight=64)
    assert args.prm_options(num_processes=8).max_inflight == 8
    assert args.prm_options(num_processes=48).max_inflight == 2
    assert RewardArguments(prm_beta=0, prm_server_max_inflight=3).prm_options(8).max_inflight == 1


def test_5xx_and_malformed_answers_are_retried(tiny_models, server, pairs):
    with FaultyServer(tiny_models.prm, model_name="tiny-prm") as faulty:
        scorer = remote(tiny_models.prm, [faulty.url], retries=3, batch_tokens=10**6)
        faulty.faults = ["500", "garbage"]
        try:
            got = scorer.score(*pairs)
            stats = scorer.metrics()
        finally:
            scorer.close()
    good = remote(tiny_models.prm, [server.url])
    try:
        expected = good.score(*pairs)
    finally:
        good.close()
    assert [r.step_scores for r in got] == [r.step_scores for r in expected]
    assert stats["retries"] == 2


def test_a_server_that_keeps_failing_gives_up_after_the_retries(tiny_models, pairs):
    with FaultyServer(tiny_models.prm) as faulty:
        scorer = remote(tiny_models.prm, [faulty.url], retries=2, batch_tokens=10**6)
        sent = faulty.requests
        faulty.faults = ["500"] * 10
        with pytest.raises(PRMUnavailableError, match="after 3 attempts.*HTTP 500"):
            scorer.score(*pairs)
        scorer.close()
        assert faulty.requests - sent == 3


def test_4xx_is_not_retried(tiny_models, pairs):
    with FaultyServer(tiny_models.prm) as faulty:
        scorer = remote(tiny_models.prm, [faulty.url], retries=3, batch_tokens=10**6)
        sent = faulty.requests
        faulty.faults = ["400"]
        with pytest.raises(PRMServerError, match="HTTP 400") as raised:
            scorer.score(*pairs)
        scorer.close()
        assert not isinstance(raised.value, PRMUnavailableError)
        assert faulty.requests - sent == 1


def test_wrong_row_count_is_an_error_not_a_misaligned_score(tiny_models, pairs):
    with FaultyServer(tiny_models.prm) as faulty:
        scorer = remote(tiny_models.prm, [faulty.url], retries=3, batch_tokens=10**6)
        faulty.faults = ["drop_row"]
        with pytest.raises(PRMServerError, match="step tags"):
            scorer.score(*pairs)
        scorer.close()


def stub_client(stub, **options):
    """A client of ``stub`` that retries at once (no back-off) and never times out on a busy machine."""
    options = {"retries": 3, "backoff": 0.0, "timeout": SLOW_OK, "deadline": 4 * SLOW_OK, **options}
    return PoolingClient([stub.url], model="stub", **options)


def item(index, rows):
    return {"index": index, "object": "pooling", "data": rows}


GOOD = [[0.25, 0.75]]
# Answers to a request of two inputs that must be refused, never turned into scores. "overflow" is standard JSON
# (json.dumps would not write it) that reads as infinity.
UNUSABLE_ANSWERS = {
    "nan": ({"data": [item(0, [[float("nan"), 1.0]]), item(1, GOOD)]}, "not a list of rows of numbers"),
    "infinity": ({"data": [item(0, GOOD), item(1, [[float("inf"), 0.0]])]}, "not a list of rows of numbers"),
    "minus infinity": ({"data": [item(0, [[float("-inf"), 0.0]]), item(1, GOOD)]}, "not a list of rows of numbers"),
    "overflow": (b'{"data": [{"index": 0, "data": [[0.5, 0.5]]}, {"index": 1, "data": [[1e999, 0.5]]}]}',
                 "not a list of rows of numbers"),
    "string": ({"data": [item(0, [["0.25", "0.75"]]), item(1, GOOD)]}, "not a list of rows of numbers"),
    "flat row": ({"data": [item(0, [0.25, 0.75]), item(1, GOOD)]}, "not a list of rows of numbers"),
    "booleans": ({"data": [item(0, [[False, True]]), item(1, GOOD)]}, "not a list of rows of numbers"),
    "duplicate index": ({"data": [item(0, GOOD), item(0, GOOD)]},
                        r"answered 2 items with indices \[0, 0\] for 2 inputs \(indices 0 to 1, once each\)"),
    "index out of range": ({"data": [item(0, GOOD), item(2, GOOD)]}, r"2 items with indices \[0, 2\] for 2 inputs"),
    "negative index": ({"data": [item(-1, GOOD), item(0, GOOD)]}, r"2 items with indices \[-1, 0\] for 2 inputs"),
    "index not a number": ({"data": [item(0, GOOD), item("1", GOOD)]}, "without a data list of indexed items"),
    "no index": ({"data": [item(0, GOOD), {"data": GOOD}]}, "without a data list of indexed items"),
    "no data": ({"object": "list"}, "without a data list of indexed items"),
    "data not a list": ({"data": 7}, "without a data list of indexed items"),
    "one item for two": ({"data": [item(0, GOOD)]}, r"answered 1 items with indices \[0\] for 2 inputs"),
    "three items for two": ({"data": [item(0, GOOD), item(1, GOOD), item(2, GOOD)]}, r"answered 3 items .* 2 inputs"),
}


@pytest.mark.parametrize("name", list(UNUSABLE_ANSWERS))
def test_an_unusable_answer_is_an_error_and_is_not_retried(name):
    body, message = UNUSABLE_ANSWERS[name]
    with StubServer() as stub:
        client = stub_client(stub)
        stub.script[("POST", "/pooling")] = [(200, body)]
        with pytest.raises(PRMServerError, match=message) as raised:
            client.pool([[1, 2], [3, 4]])
        client.close()
        assert not isinstance(raised.value, PRMUnavailableError)  # no failure policy may turn it into a missing score
        assert len(stub.sent("POST", "/pooling")) == 1  # another server or attempt would not make it right


def test_items_answered_out_of_order_are_put_back_in_input_order():
    rows = [[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]]]
    with StubServer() as stub:
        client = stub_client(stub)
        stub.script[("POST", "/pooling")] = [(200, {"data": [item(2, rows[2]), item(0, rows[0]), item(1, rows[1])]})]
        assert client.pool([[1], [2], [3]]) == rows
        client.close()


def test_http_408_and_429_are_retried():
    busy = [(408, {"error": {"message": "request timeout"}}), (429, {"error": {"message": "too many requests"}})]
    with StubServer() as stub:
        client = stub_client(stub, retries=2)
        stub.script[("POST", "/pooling")] = list(busy)
        assert client.pool([[1, 2]]) == [GOOD]
        assert client.pop_stats() == {"requests": 1, "retries": 2}
        assert len(stub.sent("POST", "/pooling")) == 3
        # Retried, not forgiven: with one retry fewer the call fails and says why.
        client.retries = 1
        stub.script[("POST", "/pooling")] = list(busy)
        with pytest.raises(PRMUnavailableError, match="after 2 attempts: .*HTTP 408.*; .*HTTP 429"):
            client.pool([[1, 2]])
        client.close()


def test_a_server_on_probation_that_fails_its_health_check_again_stays_out():
    # An hour of cooldown, ended by hand (down_until = 0): which server is in rotation never depends on timing.
    with StubServer() as stub:
        client = stub_client(stub, retries=0, failures_to_cooldown=1, cooldown=3600)
        server = client.servers[0]
        stub.script[("POST", "/pooling")] = [(500, {"error": {"message": "boom"}})]
        with pytest.raises(PRMUnavailableError, match="HTTP 500"):
            client.pool([[1, 2]])
        assert server.probation and server.down_until > time.monotonic() + 3000
        server.down_until = 0.0
        stub.script[("GET", "/health")] = [(503, b"")]
        before = time.monotonic()
        with pytest.raises(PRMUnavailableError, match="every server is out of rotation"):
            client.pool([[1, 2]])
        # Checked, found still failing, and sent nothing: out for another cooldown, still on probation.
        assert len(stub.sent("GET", "/health")) == 1 and len(stub.sent("POST", "/pooling")) == 1
        assert server.probation and server.down_until >= before + 3600
        assert client.pop_stats()["cooldowns"] == 2
        with pytest.raises(PRMUnavailableError, match="out of rotation"):
            client.pool([[1, 2]])
        assert len(stub.sent("GET", "/health")) == 1  # no health check while the cooldown runs
        server.down_until = 0.0
        assert client.pool([[1, 2]]) == [GOOD]  # healthy now: back in rotation
        assert not server.probation and len(stub.sent("GET", "/health")) == 2
        client.close()


def test_a_request_whose_deadline_passed_before_it_was_sent_is_not_sent():
    # A request queued behind max_inflight others until its call's deadline: the call has failed already.
    with StubServer() as stub:
        client = stub_client(stub)
        with pytest.raises(PRMUnavailableError, match="deadline of .* passed before a request could be sent"):
            client._request([[1, 2]], deadline=time.monotonic())
        client.close()
        assert stub.sent("POST", "/pooling") == []


def test_slow_answers_time_out_and_the_call_ends_within_its_deadline(tiny_models, pairs):
    with FaultyServer(tiny_models.prm) as slow:
        scorer = remote(tiny_models.prm, [slow.url], retries=5, request_timeout=SLOW_OK, deadline=1.0)
        slow.faults = [600.0] * 20  # every answer hangs until the server stops
        start = time.monotonic()
        # The requests' own timeouts, or the call's deadline, whichever ends it first: not any other unavailability.
        with pytest.raises(PRMUnavailableError, match=r"timed out|did not answer .* within the deadline of 1 s"):
            scorer.score(*pairs)
        elapsed = time.monotonic() - start
        scorer.close()
    # Only the deadline can end the call this early: one attempt alone may take SLOW_OK, six of them six times that.
    assert elapsed < SLOW_OK


def test_refused_connections_fail_within_the_deadline(refused_url):
    client = PoolingClient([refused_url], model="m", retries=50, backoff=0.05, deadline=0.5)
    client._random.seed(0)
    with pytest.raises(PRMUnavailableError, match=r"after \d+ attempts|within the deadline") as raised:
        client.pool([[1, 2, 3]])
    client.close()
    # The deadline ended it, not the retries: the back-off (up to 10 s a pause) would take minutes for 51 attempts.
    attempts = re.search(r"after (\d+) attempts", str(raised.value))
    assert attempts is None or int(attempts.group(1)) < 51


def test_a_dead_server_leaves_the_rotation_and_the_live_one_scores_everything(tiny_models, server, pairs, refused_url):
    dead = refused_url
    scorer = remote(tiny_models.prm, [server.url], batch_tokens=50)
    scorer.client.servers.insert(0, type(scorer.client.servers[0])(dead))  # died after the start-up check
    scorer.client.failures_to_cooldown = 1
    scorer.client.retries = 2
    expected = remote(tiny_models.prm, [server.url])
    try:
        got = scorer.score(*pairs)
        stats = scorer.metrics()
        assert [r.step_scores for r in got] == [r.step_scores for r in expected.score(*pairs)]
    finally:
        scorer.close()
        expected.close()
    assert stats["cooldowns"] == 1
    assert scorer.client.servers[0].down_until > time.monotonic()


def test_cooldown_then_health_check_then_back_in_rotation(tiny_models):
    # An hour of cooldown, ended by hand: whether the server is still out must not depend on how fast the test runs.
    with FaultyServer(tiny_models.prm) as flaky:
        client = PoolingClient([flaky.url], retries=0, failures_to_cooldown=1, cooldown=3600, deadline=SLOW_OK)
        flaky.faults = ["500"]
        before = time.monotonic()
        with pytest.raises(PRMUnavailableError):
            client.pool([[5, 6, 7]])
        assert before + 3600 <= client.servers[0].down_until <= time.monotonic() + 3600
        sent = flaky.requests
        with pytest.raises(PRMUnavailableError, match="out of rotation"):
            client.pool([[5, 6, 7]])
        assert flaky.requests == sent
        client.servers[0].down_until = 0.0  # the cooldown is over
        assert client.pool([[5, 6, 7]]) == [[]]  # no step tag in the input: no rows
        assert client.servers[0].probation is False
        client.close()


def test_startup_check_refuses_a_down_server(tiny_models, refused_url):
    with pytest.raises(ConfigError, match="no PRM server answers at .*/health"):
        remote(tiny_models.prm, [refused_url])


def test_startup_check_refuses_an_unknown_model_name(tiny_models, server):
    with pytest.raises(ConfigError, match="prm_server_model='other' is not served .*tiny-prm"):
        remote(tiny_models.prm, [server.url], server_model="other")


PROBE_ROWS = [[0.25, 0.75]] * 3  # what a step classifier answers for the 3 step tags of the start-up probe


def test_startup_check_needs_a_model_name_where_a_server_serves_several(tiny_models):
    with StubServer(models=["prm-a", "prm-b"]) as stub:
        stub.defaults[("POST", "/pooling")] = rows_for_each_input(PROBE_ROWS)
        unnamed = r"prm_server_model is unset but .* serves \['prm-a', 'prm-b'\]: name one"
        with pytest.raises(ConfigError, match=unnamed):
            remote(tiny_models.prm, [stub.url])
        assert stub.sent("POST", "/pooling") == []  # nothing is sent to a model picked by guess
        remote(tiny_models.prm, [stub.url], server_model="prm-b").close()
        assert [body["model"] for body in stub.sent("POST", "/pooling")] == ["prm-b"]


@pytest.mark.parametrize(
    "listing",
    [(500, {"error": {"message": "boom"}}), (200, b"{not json"), (200, {"object": "list"}),
     (200, {"data": [{"name": "prm"}]}), (200, ["prm"])],
    ids=["http-500", "not-json", "no-data", "no-id", "not-an-object"],
)
def test_startup_check_refuses_a_server_whose_model_list_fails(tiny_models, listing):
    with StubServer() as stub:
        stub.script[("GET", "/v1/models")] = [listing]
        with pytest.raises(ConfigError, match=r"prm_server_urls: http://\S+/v1/models did not list the served models"):
            remote(tiny_models.prm, [stub.url])
        assert stub.sent("POST", "/pooling") == []


def test_startup_check_refuses_a_server_whose_health_check_fails(tiny_models):
    with StubServer() as stub:
        stub.script[("GET", "/health")] = [(503, b"")]
        with pytest.raises(ConfigError, match=r"no PRM server answers at http://\S+/health \(HTTP 503\)"):
            remote(tiny_models.prm, [stub.url])


@pytest.mark.parametrize(
    "rows",
    [[[2.0, -1.0]] * 3, [[0.7, 0.7]] * 3, [[1.5, -0.5]] * 3, [[0.75]] * 3, [[0.2, 0.3, 0.5]] * 3,
     [[0.25, 0.75], [0.25, 0.75], [0.9, 0.3]]],
    ids=["logits", "sum-above-one", "outside-zero-one", "one-label", "three-labels", "one-bad-row"],
)
def test_startup_check_refuses_probe_rows_that_are_not_probabilities(tiny_models, rows):
    # Every server is checked, not just the first: the second answers the probe wrongly.
    with StubServer() as good, StubServer() as bad:
        good.defaults[("POST", "/pooling")] = rows_for_each_input(PROBE_ROWS)
        bad.defaults[("POST", "/pooling")] = rows_for_each_input(rows)
        remote(tiny_models.prm, [good.url]).close()  # the same probe, answered right, passes
        with pytest.raises(ConfigError, match=re.escape(bad.url) + r" answered .* for a probe with 3 step tags"):
            remote(tiny_models.prm, [good.url, bad.url])


@pytest.mark.parametrize(
    ("answer", "reason"),
    [((500, {"error": {"message": "boom"}}), "HTTP 500"), ((400, {"error": {"message": "no"}}), "rejected .* HTTP 400"),
     ((200, {"data": []}), r"answered 0 items with indices \[\] for 1 inputs")],
    ids=["http-500", "http-400", "no-items"],
)
def test_startup_check_reports_a_failed_probe_request(tiny_models, answer, reason):
    with StubServer() as stub:
        stub.script[("POST", "/pooling")] = [answer]
        with pytest.raises(ConfigError, match="prm_server_urls: the probe request failed: .*" + reason):
            remote(tiny_models.prm, [stub.url])
        assert len(stub.sent("POST", "/pooling")) == 1  # start-up hears from each server once, without retries


def test_startup_check_refuses_a_server_with_another_step_tag(tiny_models):
    with PoolingServer(tiny_models.prm, step_tag="<|endoftext|>") as wrong:
        with pytest.raises(ConfigError, match="probe with 3 step tags"):
            remote(tiny_models.prm, [wrong.url])


def test_startup_check_refuses_a_context_longer_than_the_server_takes(tiny_models, server):
    with pytest.raises(ConfigError, match="prm_max_length=100000 exceeds the max_model_len"):
        remote(tiny_models.prm, [server.url], max_length=100000)


def test_training_refuses_to_start_before_any_weights_load(tiny_models, refused_url):
    args = RewardArguments(prm_name_or_path=str(tiny_models.prm), prm_server_urls=[refused_url])
    with pytest.raises(ConfigError, match="prm_server_urls: no PRM server answers"):
        validate(args)


def config_only(tiny_models, tmp_path, **config_changes):
    """The tiny PRM's config and tokenizer without its weights (they live on the servers), config edited."""
    target = tmp_path / "prm"
    shutil.copytree(tiny_models.prm, target, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((target / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_served_checkpoint_needs_only_config_and_tokenizer(tiny_models, tmp_path):
    info = inspect_served_checkpoint(config_only(tiny_models, tmp_path, max_position_embeddings=321))
    assert (info.kind, info.max_position_embeddings) == ("step_classifier", 321)


def test_served_checkpoint_without_a_config_is_refused(tiny_models, tmp_path):
    with pytest.raises(PRMCheckpointError, match="must be a local directory with the PRM's config.json"):
        inspect_served_checkpoint(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PRMCheckpointError, match="must be a local directory with the PRM's config.json"):
        inspect_served_checkpoint(empty)
    (empty / "config.json").mkdir()  # a directory of that name is no config file
    with pytest.raises(PRMCheckpointError, match="must be a local directory with the PRM's config.json"):
        inspect_served_checkpoint(empty)


@pytest.mark.parametrize("architectures", [["LlamaForCausalLM"], None], ids=["causal-lm", "none"])
def test_served_checkpoint_of_another_architecture_is_refused(tiny_models, tmp_path, architectures):
    path = config_only(tiny_models, tmp_path, architectures=architectures)
    named = re.escape(str(architectures or []))
    with pytest.raises(PRMCheckpointError, match=f"names architectures {named}; remote scoring supports the step"):
        inspect_served_checkpoint(path)


def test_served_checkpoint_with_weights_is_checked_as_a_local_one(tiny_models):
    # The policy's directory holds weights, of a causal LM without a step head: not a step classifier.
    with pytest.raises(PRMCheckpointError, match="not a supported PRM"):
        inspect_served_checkpoint(tiny_models.policy)


def exact(completions, solution, **kwargs):
    return [float(c.endswith(s)) for c, s in zip(completions, solution)]


def went_down(scorer, refused_url):
    """``scorer``, whose servers passed the start-up check, now finds them gone. A refused address held by the test
    stands for them, rather than the port of a stopped server, which another process may take at once."""
    scorer.client.servers[:] = [type(scorer.client.servers[0])(refused_url)]
    return scorer


def test_servers_down_mid_training_fail_the_step_by_default(tiny_models, server, pairs, refused_url):
    scorer = went_down(remote(tiny_models.prm, [server.url], retries=1, deadline=2.0), refused_url)
    reward = MixedReward(exact, scorer, beta=0.5)
    with pytest.raises(PRMUnavailableError, match="prm_on_failure"):
        reward(prompts=pairs[0], completions=pairs[1], solution=["2"] * len(pairs[1]))
    scorer.close()


def test_servers_down_mid_training_fall_back_to_the_outcome_when_asked(tiny_models, server, pairs, refused_url):
    scorer = went_down(remote(tiny_models.prm, [server.url], retries=1, deadline=2.0), refused_url)
    reward = MixedReward(exact, scorer, beta=0.5, on_failure="outcome_only")
    logged = {}
    # Odd rows are given their own last character as the answer (right), even rows a "#" no completion ends with.
    solutions = [c[-1] if i % 2 else "#" for i, c in enumerate(pairs[1])]
    got = reward(prompts=pairs[0], completions=pairs[1], solution=solutions,
                 log_metric=lambda name, value: logged.__setitem__(name, value))
    scorer.close()
    # Each row keeps (1 - beta) * outcome: 0.5 where right, 0 where wrong.
    assert got == [0.5 if i % 2 else 0.0 for i in range(len(got))]
    assert logged["reasonflux/prm_unavailable"] == 1.0
    assert logged["reasonflux/prm_missing"] == len(got)


def test_remote_config_keys_are_checked(tiny_models):
    with pytest.raises(ConfigError, match=r"^prm_kind=.value_head.: a value_head PRM cannot be scored on PRM servers"):
        RewardArguments(prm_name_or_path=str(tiny_models.prm), prm_server_urls=["http://a:1"], prm_kind="value_head")
    with pytest.raises(ConfigError, match="prm_server_urls=.*must be base URLs"):
        RewardArguments(prm_name_or_path=str(tiny_models.prm), prm_server_urls=["a:1"])
    with pytest.raises(ConfigError, match="prm_on_failure"):
        RewardArguments(prm_beta=0, prm_on_failure="ignore")
    args = reward_arguments_from_env({"REASONFLUX_PRM_NAME_OR_PATH": str(tiny_models.prm),
                                      "REASONFLUX_PRM_SERVER_URLS": "http://a:1, http://b:2"})
    assert args.prm_server_urls == ["http://a:1", "http://b:2"]


def test_training_scores_through_the_servers(tiny_models, tmp_path):
    """A real GRPO run whose PRM lives on a server: the local directory holds only config and tokenizer."""
    tokenizer_only = tmp_path / "prm"
    shutil.copytree(tiny_models.prm, tokenizer_only, ignore=shutil.ignore_patterns("*.safetensors"))
    out = tmp_path / "run"
    with PoolingServer(tiny_models.prm, model_name="tiny-prm") as served:
        proc = subprocess.run(
            [sys.executable, "-m", "reasonflux_rl.train", "--config", str(REPO / "recipes/smoke/cpu.yaml"),
             "--model_name_or_path", str(tiny_models.policy), "--prm_name_or_path", str(tokenizer_only),
             "--prm_server_urls", served.url, "--max_steps", "2", "--report_to", "none", "--output_dir", str(out)],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )
        requests = served.requests
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = [row for row in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in row]
    assert len(steps) == 2
    for row in steps:
        assert 0.0 <= row["reasonflux/prm_mean"] <= 1.0
        assert row["reasonflux/prm_server_requests"] >= 1
    # Two start-up probes (launch checks, then the reward) and at least one scoring request per step.
    assert requests >= 2 + 2


def test_serve_prm_command_and_score_command_through_it(tiny_models, tmp_path, pairs):
    """`reasonflux-rl serve-prm` serves the tiny PRM; `reasonflux-rl score --server-url` scores as the local PRM."""
    # Port 0: the server binds a free port itself and prints its URL, so no other process can take the port between
    # choosing it and binding it.
    server = subprocess.Popen(
        [sys.executable, "-m", "reasonflux_rl.cli", "serve-prm", "--prm", str(tiny_models.prm), "--port", "0",
         "--model-name", "tiny-prm"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner: list[str] = []
        reader = threading.Thread(target=lambda: banner.append(server.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=300)
        printed = re.search(r" at (http://127\.0\.0\.1:\d+) ", banner[0] if banner else "")
        assert printed, f"serve-prm printed {banner!r}; it exited with {server.poll()}"
        url = printed.group(1)
        client = PoolingClient([url])
        deadline = time.monotonic() + 120
        while client.health(url) is not None:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.2)
        client.close()
        source = tmp_path / "in.jsonl"
        source.write_text("".join(json.dumps({"problem": p, "completion": c}) + "\n" for p, c in zip(*pairs)))
        outputs = {}
        for where, extra in (("local", []), ("remote", ["--server-url", url])):
            proc = subprocess.run(
                [sys.executable, "-m", "reasonflux_rl.cli", "score", "--prm", str(tiny_models.prm), "--input",
                 str(source), "--output", str(tmp_path / f"{where}.jsonl"), "--no-progress", *extra],
                capture_output=True, text=True, timeout=300,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            outputs[where] = [json.loads(line) for line in (tmp_path / f"{where}.jsonl").read_text().splitlines()]
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert len(outputs["remote"]) == len(pairs[1])
    for local, remote_row in zip(outputs["local"], outputs["remote"]):
        assert remote_row["step_scores"] == pytest.approx(local["step_scores"], abs=1e-5)
    settings = json.loads((tmp_path / "remote.jsonl.meta.json").read_text())["settings"]
    assert settings["device_type"] == "server"
