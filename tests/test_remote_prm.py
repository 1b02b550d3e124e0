"""The PRM on its own servers: scores equal the local PRM's, and slow, failing, dead or wrong servers give the
documented outcome within the deadline. Real HTTP on 127.0.0.1 against a server that answers vLLM's pooling
protocol with the tiny PRM (reasonflux_rl.prm.placement.pooling_server)."""

import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_prm_scorer import PROBLEM, random_completion

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm.placement.pooling_client import PoolingClient, PRMServerError, PRMUnavailableError
from reasonflux_rl.prm.placement.pooling_server import PoolingServer
from reasonflux_rl.rewards.build import validate
from reasonflux_rl.rewards.config import RewardArguments, reward_arguments_from_env
from reasonflux_rl.rewards.prm import MixedReward

REPO = Path(__file__).resolve().parents[1]
MARGIN = 1.5  # seconds of slack on a loaded 2-core machine


def dead_url() -> str:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Gauge:
    """Requests being answered right now, and the most at once, over one or more servers."""

    def __init__(self):
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

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
    options = {"retries": 1, "request_timeout": 5.0, "deadline": 10.0, **options}
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
        try:
            scorer.score(*pairs)
        finally:
            scorer.close()
    assert probes == 2
    assert one.requests > 2 and two.requests > 2
    assert gauge.most == 3  # requests overlap, and never more than the bound


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


def test_slow_answers_time_out_and_the_call_ends_within_its_deadline(tiny_models, pairs):
    with FaultyServer(tiny_models.prm) as slow:
        scorer = remote(tiny_models.prm, [slow.url], retries=5, request_timeout=0.3, deadline=1.0)
        slow.faults = [5.0] * 20
        start = time.monotonic()
        with pytest.raises(PRMUnavailableError):
            scorer.score(*pairs)
        elapsed = time.monotonic() - start
        scorer.close()
    assert elapsed < 1.0 + MARGIN


def test_refused_connections_fail_within_the_deadline():
    client = PoolingClient([dead_url()], model="m", retries=50, backoff=0.05, deadline=0.5)
    start = time.monotonic()
    with pytest.raises(PRMUnavailableError):
        client.pool([[1, 2, 3]])
    assert time.monotonic() - start < 0.5 + MARGIN
    client.close()


def test_a_dead_server_leaves_the_rotation_and_the_live_one_scores_everything(tiny_models, server, pairs):
    dead = dead_url()
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
    with FaultyServer(tiny_models.prm) as flaky:
        client = PoolingClient([flaky.url], retries=0, failures_to_cooldown=1, cooldown=0.2, deadline=5)
        flaky.faults = ["500"]
        with pytest.raises(PRMUnavailableError):
            client.pool([[5, 6, 7]])
        with pytest.raises(PRMUnavailableError, match="out of rotation"):
            client.pool([[5, 6, 7]])
        time.sleep(0.3)
        assert client.pool([[5, 6, 7]]) == [[]]  # no step tag in the input: no rows
        assert client.servers[0].probation is False
        client.close()


def test_startup_check_refuses_a_down_server(tiny_models):
    with pytest.raises(ConfigError, match="no PRM server answers at .*/health"):
        remote(tiny_models.prm, [dead_url()])


def test_startup_check_refuses_an_unknown_model_name(tiny_models, server):
    with pytest.raises(ConfigError, match="prm_server_model='other' is not served .*tiny-prm"):
        remote(tiny_models.prm, [server.url], server_model="other")


def test_startup_check_refuses_a_server_with_another_step_tag(tiny_models):
    with PoolingServer(tiny_models.prm, step_tag="<|endoftext|>") as wrong:
        with pytest.raises(ConfigError, match="probe with 3 step tags"):
            remote(tiny_models.prm, [wrong.url])


def test_startup_check_refuses_a_context_longer_than_the_server_takes(tiny_models, server):
    with pytest.raises(ConfigError, match="prm_max_length=100000 exceeds the max_model_len"):
        remote(tiny_models.prm, [server.url], max_length=100000)


def test_training_refuses_to_start_before_any_weights_load(tiny_models):
    args = RewardArguments(prm_name_or_path=str(tiny_models.prm), prm_server_urls=[dead_url()])
    with pytest.raises(ConfigError, match="prm_server_urls: no PRM server answers"):
        validate(args)


def exact(completions, solution, **kwargs):
    return [float(c.endswith(s)) for c, s in zip(completions, solution)]


def test_servers_down_mid_training_fail_the_step_by_default(tiny_models, pairs):
    with FaultyServer(tiny_models.prm) as doomed:
        scorer = remote(tiny_models.prm, [doomed.url], retries=1, deadline=2.0)
    reward = MixedReward(exact, scorer, beta=0.5)  # the server is gone now
    start = time.monotonic()
    with pytest.raises(PRMUnavailableError, match="prm_on_failure"):
        reward(prompts=pairs[0], completions=pairs[1], solution=["2"] * len(pairs[1]))
    assert time.monotonic() - start < 2.0 + MARGIN
    scorer.close()


def test_servers_down_mid_training_fall_back_to_the_outcome_when_asked(tiny_models, pairs):
    with FaultyServer(tiny_models.prm) as doomed:
        scorer = remote(tiny_models.prm, [doomed.url], retries=1, deadline=2.0)
    reward = MixedReward(exact, scorer, beta=0.5, on_failure="outcome_only")
    logged = {}
    solutions = [c[-1] for c in pairs[1]]
    got = reward(prompts=pairs[0], completions=pairs[1], solution=solutions,
                 log_metric=lambda name, value: logged.__setitem__(name, value))
    scorer.close()
    assert got == [0.5 * o for o in exact(pairs[1], solutions)]
    assert logged["reasonflux/prm_unavailable"] == 1.0
    assert logged["reasonflux/prm_missing"] == len(got)


def test_remote_config_keys_are_checked(tiny_models):
    with pytest.raises(ConfigError, match="cannot be served remotely"):
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
    port = int(dead_url().rsplit(":", 1)[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "reasonflux_rl.cli", "serve-prm", "--prm", str(tiny_models.prm), "--port", str(port),
         "--model-name", "tiny-prm"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        client = PoolingClient([f"http://127.0.0.1:{port}"])
        deadline = time.monotonic() + 120
        while client.health(client.servers[0].url) is not None:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.2)
        client.close()
        source = tmp_path / "in.jsonl"
        source.write_text("".join(json.dumps({"problem": p, "completion": c}) + "\n" for p, c in zip(*pairs)))
        outputs = {}
        for where, extra in (("local", []), ("remote", ["--server-url", f"http://127.0.0.1:{port}"])):
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
