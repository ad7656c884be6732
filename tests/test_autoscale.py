"""Autoscaling: the replica_policy spec, the built-in policies, the Autoscaler's hysteresis, load readers.

The Autoscaler is driven with an explicit clock (``now`` passed in), one
sample per second as the controller ticks; the load readers talk to real
HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from skyk.builtin.policies import QueueLengthScaling, RequestRateScaling
from skyk.errors import SkykError, SpecError
from skyk.plugins.manager import Kernel
from skyk.serve.autoscale import Autoscaler, scaling_policy
from skyk.serve.load import QUEUE_METRICS, queue_length, router_load, router_stats, sum_metric
from skyk.serve.policies import LoadSample, ScalingPolicy
from skyk.spec.service import ReplicaPolicy
from skyk.spec.task import task_from_mapping
from test_plugin_manager import fake_dist

# ------------------------------------------------------------------ helpers


def replica_policy(**fields) -> ReplicaPolicy:
    """A replica_policy read through the task spec, as a service's YAML would give it."""
    task = task_from_mapping({"service": {"replica_policy": fields}}, "task.yaml")
    return task.service.replica_policy


def autoscaling(**fields) -> ReplicaPolicy:
    """1..10 replicas, SkyServe's default delays, unless ``fields`` say otherwise."""
    return replica_policy(**{"min_replicas": 1, "max_replicas": 10, "target_qps_per_replica": 1.0,
                             **fields})


def sample(current: int = 1, rps: float = 0.0, queues: tuple[float, ...] = (),
           waiting: int = 0, ready: int | None = None) -> LoadSample:
    return LoadSample(current_replicas=current, ready_replicas=current if ready is None else ready,
                      requests_per_second=rps, queue_lengths=queues, waiting_requests=waiting)


class Scripted(ScalingPolicy):
    """A policy whose wish the test sets, to test the Autoscaler alone."""

    name = "scripted"

    def __init__(self, wish: int = 0) -> None:
        self.wish = wish

    def desired_replicas(self, load: LoadSample, policy: ReplicaPolicy) -> int:
        return self.wish


class Driver:
    """An Autoscaler with a scripted policy and a fake clock ticking once a second."""

    def __init__(self, spec: ReplicaPolicy, wish: int, current: int = 1, start: float = 1000.0):
        self.policy = Scripted(wish)
        self.autoscaler = Autoscaler(self.policy, spec)
        self.now = start
        self.current = current
        self.targets: list[int] = []
        self.step(wish)

    def step(self, wish: int, load: LoadSample | None = None) -> int:
        """One tick at the current time with ``wish``; the controller then runs the target."""
        self.policy.wish = wish
        target = self.autoscaler.target(load or sample(current=self.current), self.now)
        self.targets.append(target)
        self.current = target
        return target

    def run(self, seconds: int, wish: int) -> list[int]:
        """Tick once a second for ``seconds`` seconds with ``wish``; return the targets."""
        out = []
        for _ in range(seconds):
            self.now += 1
            out.append(self.step(wish))
        return out


# --------------------------------------------------------------------- spec


def test_replica_policy_defaults_keep_skypilots():
    spec = replica_policy(min_replicas=1, max_replicas=3, target_qps_per_replica=2)
    assert spec.upscale_delay_seconds == 300 and spec.downscale_delay_seconds == 1200
    assert spec.policy is None and spec.scaling_policy_name == "request_rate"
    assert spec.target_qps_per_replica == 2.0 and spec.autoscales


@pytest.mark.parametrize("fields, name", [
    ({"target_qps_per_replica": 2}, "request_rate"),
    ({"target_queue_length_per_replica": 4}, "queue_length"),
    # The queue target wins when both are given.
    ({"target_qps_per_replica": 2, "target_queue_length_per_replica": 4}, "queue_length"),
    ({"target_qps_per_replica": 2, "policy": "request_rate"}, "request_rate"),
    # A third-party policy needs no built-in target.
    ({"policy": "my_policy"}, "my_policy"),
])
def test_the_policy_is_chosen_from_the_target_unless_named(fields, name):
    spec = replica_policy(min_replicas=0, max_replicas=4, **fields)
    assert spec.scaling_policy_name == name


@pytest.mark.parametrize("fields, upper", [
    ({"min_replicas": 2}, 2),
    ({"min_replicas": 2, "max_replicas": 2}, 2),
    ({"min_replicas": 0}, 0),
])
def test_a_fixed_count_needs_no_target(fields, upper):
    spec = replica_policy(**fields)
    assert spec.upper_replicas == upper and not spec.autoscales
    assert spec.scaling_policy_name == "request_rate"


def test_bounds_without_a_target_stay_at_min_replicas():
    # As in SkyServe: min_replicas and max_replicas with no target is a fixed count of min_replicas.
    spec = replica_policy(min_replicas=1, max_replicas=3)
    assert not spec.autoscales
    load = sample(current=1, rps=100.0)
    assert RequestRateScaling().desired_replicas(load, spec) == 1


@pytest.mark.parametrize("fields, expected, path", [
    ({"min_replicas": 1, "max_replicas": 3, "policy": "queue_length"},
     "policy queue_length needs target_queue_length_per_replica", "service.replica_policy"),
    ({"min_replicas": 1, "max_replicas": 3, "policy": "request_rate",
      "target_queue_length_per_replica": 4},
     "policy request_rate needs target_qps_per_replica", "service.replica_policy"),
    ({"min_replicas": 1, "max_replicas": 3, "target_queue_length_per_replica": 0},
     "greater than 0", "service.replica_policy.target_queue_length_per_replica"),
    ({"min_replicas": 1, "max_replicas": 3, "target_queue_length_per_replica": "many"},
     "got 'many'", "service.replica_policy.target_queue_length_per_replica"),
    ({"min_replicas": 1, "max_replicas": 3, "policy": ""},
     "at least 1 character", "service.replica_policy.policy"),
    ({"min_replicas": 1, "max_replicas": 3, "target_queue_length": 4},
     "did you mean 'target_queue_length_per_replica'", "service.replica_policy"),
    ({"min_replicas": 3, "max_replicas": 1, "target_qps_per_replica": 1},
     "below min_replicas", "service.replica_policy"),
], ids=["queue-policy-without-target", "rate-policy-without-target",
        "queue-target-zero", "queue-target-word", "empty-policy", "typo", "max-below-min"])
def test_bad_replica_policy_is_one_line_with_a_hint(fields, expected, path):
    with pytest.raises(SpecError) as caught:
        replica_policy(**fields)
    line = caught.value.one_line()
    assert expected in line and f"task.yaml: {path}" in line
    assert "\n" not in line and ("hint:" in line or "did you mean" in line)


# ------------------------------------------------------------------ policies


@pytest.mark.parametrize("rps, target, wanted", [
    (0.0, 2.0, 0),
    (0.1, 2.0, 1),
    (2.0, 2.0, 1),
    (2.01, 2.0, 2),
    (10.0, 3.0, 4),
    (0.3, 0.1, 3),  # 0.3 / 0.1 is 3.0000000000000004 in floats: still 3
])
def test_request_rate_wants_rps_over_the_target(rps, target, wanted):
    spec = autoscaling(target_qps_per_replica=target)
    assert RequestRateScaling().desired_replicas(sample(rps=rps), spec) == wanted


@pytest.mark.parametrize("queues, waiting, wanted", [
    ((), 0, 0),                 # nothing reported, nothing held
    ((0.0, 0.0, 0.0), 0, 0),    # empty queues: let the count fall
    ((8.0, 8.0), 0, 4),         # twice the target on two replicas: four
    ((4.0, 4.0), 0, 2),         # at the target: no more
    ((5.0, 4.0), 0, 3),         # above it on average: one more
    ((1.0, 0.0, 0.0), 0, 1),    # one saturated replica stays
    ((1.0, 1.0, 1.0), 0, 3),    # three saturated replicas stay, though 3 < one target
    ((), 5, 2),                 # held at the router (no replica ready) counts as queued
    ((2.0,), 3, 2),
])
def test_queue_length_wants_the_queue_over_the_target(queues, waiting, wanted):
    spec = autoscaling(target_queue_length_per_replica=4)
    load = sample(current=len(queues), queues=queues, waiting=waiting)
    assert QueueLengthScaling().desired_replicas(load, spec) == wanted


@pytest.mark.parametrize("policy", [RequestRateScaling(), QueueLengthScaling()])
def test_without_its_target_a_policy_asks_for_min_replicas(policy):
    # Only possible for a fixed count: the spec rejects it when autoscaling.
    spec = replica_policy(min_replicas=2)
    load = sample(current=2, rps=100.0, queues=(50.0, 50.0))
    assert policy.desired_replicas(load, spec) == 2


def test_both_policies_are_registered_built_ins():
    policies = Kernel.load(("policy",)).scaling_policies()
    assert isinstance(policies["request_rate"], RequestRateScaling)
    assert isinstance(policies["queue_length"], QueueLengthScaling)


@pytest.mark.parametrize("fields, cls", [
    ({"target_qps_per_replica": 1}, RequestRateScaling),
    ({"target_queue_length_per_replica": 1}, QueueLengthScaling),
    ({"target_queue_length_per_replica": 1, "policy": "request_rate",
      "target_qps_per_replica": 1}, RequestRateScaling),
])
def test_scaling_policy_finds_the_named_plugin(fields, cls):
    assert isinstance(scaling_policy(replica_policy(min_replicas=1, max_replicas=2, **fields)), cls)


def test_an_unknown_policy_is_one_line_naming_the_known_ones():
    with pytest.raises(SkykError) as caught:
        scaling_policy(replica_policy(min_replicas=1, max_replicas=2, policy="queue_lenght"))
    line = caught.value.one_line()
    assert "scaling policy queue_lenght does not exist; did you mean queue_length?" in line
    assert "hint: known scaling policies: queue_length, request_rate" in line
    assert "\n" not in line


POLICY_MODULE = '''
from skyk.hookspecs import hookimpl
from skyk.serve.policies import ScalingPolicy

class AlwaysThree(ScalingPolicy):
    name = "always_three"

    def desired_replicas(self, load, policy):
        return 3

@hookimpl
def skyk_scaling_policies():
    return [AlwaysThree()]
'''

USE_THIRD_PARTY_POLICY = '''
from skyk.serve.autoscale import Autoscaler, scaling_policy
from skyk.serve.policies import LoadSample
from skyk.spec.service import ReplicaPolicy

spec = ReplicaPolicy(min_replicas=1, max_replicas=5, policy="always_three", upscale_delay_seconds=0)
policy = scaling_policy(spec)
print(type(policy).__name__, Autoscaler(policy, spec).target(LoadSample(1, 1, 0.0, ()), 0.0))
'''


def run_with_policy_plugin(tmp_path, name: str, module: str, code: str):
    """Run ``code`` in a fresh interpreter with a policy plugin installed.

    Installed the way a real plugin is: a distribution with an entry point in
    ``skyk.policies``, found on the interpreter's path.
    """
    site = tmp_path / "site"
    site.mkdir()
    fake_dist(site, f"skyk-{name}", {name: f"{name}_policies"}, {f"{name}_policies": module},
              group="skyk.policies")
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)


def test_a_third_party_scaling_policy_is_found_by_name(tmp_path):
    result = run_with_policy_plugin(tmp_path, "acme", POLICY_MODULE, USE_THIRD_PARTY_POLICY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["AlwaysThree", "3"]


def test_an_unknown_policy_names_broken_policy_plugins(tmp_path):
    code = ("from skyk.errors import SkykError\n"
            "from skyk.serve.autoscale import scaling_policy\n"
            "from skyk.spec.service import ReplicaPolicy\n"
            "try:\n"
            "    scaling_policy(ReplicaPolicy(min_replicas=1, max_replicas=2, policy='always_three'))\n"
            "except SkykError as exc:\n"
            "    print(exc.one_line())\n")
    result = run_with_policy_plugin(tmp_path, "broken", "import not_installed_sdk\n", code)
    assert result.returncode == 0, result.stderr
    assert "scaling policy always_three does not exist" in result.stdout
    assert "policy plugins that failed to load: broken (ModuleNotFoundError" in result.stdout


# ---------------------------------------------------------------- autoscaler


def test_upscale_only_after_the_wish_lasted_the_whole_delay():
    drive = Driver(autoscaling(), wish=1)
    assert drive.run(299, wish=4) == [1] * 299
    # At 300 s the window still reaches back to the first tick, which wished 1.
    assert drive.run(1, wish=4) == [1]
    assert drive.run(1, wish=4) == [4]


def test_upscale_goes_to_the_lowest_wish_of_the_window():
    drive = Driver(autoscaling(), wish=1)
    drive.run(100, wish=6)
    drive.run(250, wish=3)  # 6 then 3: 3 held throughout the last 300 s
    assert drive.current == 3
    drive.run(300, wish=6)
    assert drive.current == 3  # the 3 still held at the window's start
    drive.run(1, wish=6)
    assert drive.current == 6


def test_a_brief_spike_does_not_scale_up():
    drive = Driver(autoscaling(), wish=2, current=2)
    for _ in range(5):
        drive.run(60, wish=9)   # a one-minute burst...
        drive.run(240, wish=2)  # ...every five minutes
    assert set(drive.targets) == {2}


def test_a_brief_dip_does_not_scale_down():
    drive = Driver(autoscaling(), wish=5, current=5)
    for _ in range(10):
        drive.run(30, wish=1)   # half a minute of quiet...
        drive.run(570, wish=5)  # ...every ten minutes, for well over the downscale delay
    assert set(drive.targets) == {5}


def test_jitter_between_two_counts_moves_nothing():
    drive = Driver(autoscaling(upscale_delay_seconds=10, downscale_delay_seconds=10), wish=3,
                   current=3)
    for _ in range(200):
        drive.run(1, wish=4)
        drive.run(1, wish=3)
    assert set(drive.targets) == {3}


def test_downscale_only_after_the_whole_delay():
    # A fresh autoscaler has no history: it keeps what runs for a whole delay.
    drive = Driver(autoscaling(), wish=2, current=5)
    assert drive.targets == [5]
    assert drive.run(1199, wish=2) == [5] * 1199
    assert drive.run(1, wish=2) == [2]


def test_downscale_goes_to_the_highest_wish_of_the_window():
    drive = Driver(autoscaling(), wish=8, current=8)
    drive.run(600, wish=4)
    drive.run(700, wish=2)  # the last 1200 s held 4 and 2
    assert drive.current == 4
    drive.run(1200, wish=2)
    assert drive.current == 2


def test_a_restart_starts_from_the_given_count():
    spec = autoscaling()
    autoscaler = Autoscaler(Scripted(1), spec, current=4)
    assert autoscaler.current == 4
    # The given count wins over the sample's (which may count other versions).
    assert autoscaler.target(sample(current=7), 0.0) == 4
    assert Autoscaler(Scripted(1), spec, current=40).current == 10


def test_the_target_stays_within_the_bounds():
    spec = autoscaling(min_replicas=2, max_replicas=6, upscale_delay_seconds=0,
                       downscale_delay_seconds=0)
    assert Driver(spec, wish=50).targets == [6]
    assert Driver(spec, wish=0).targets == [2]
    # A restart with more replicas than max_replicas (the spec changed) cuts
    # back at once; with fewer than min_replicas it launches at once.
    slow = autoscaling(min_replicas=2, max_replicas=6)
    assert Driver(slow, wish=6, current=9).targets == [6]
    assert Driver(slow, wish=2, current=0).targets == [2]


def test_clamped_wishes_still_need_the_delay():
    drive = Driver(autoscaling(min_replicas=2, max_replicas=6), wish=2, current=2)
    assert drive.run(300, wish=50) == [2] * 300
    assert drive.run(1, wish=50) == [6]


def test_zero_delays_follow_the_policy():
    drive = Driver(autoscaling(upscale_delay_seconds=0, downscale_delay_seconds=0), wish=1)
    assert [drive.run(1, wish=w)[0] for w in (4, 2, 7, 1)] == [4, 2, 7, 1]


def test_cold_start_goes_to_one_at_once():
    spec = autoscaling(min_replicas=0, max_replicas=4, target_qps_per_replica=None,
                       target_queue_length_per_replica=2)
    autoscaler = Autoscaler(QueueLengthScaling(), spec)
    # Idle for longer than both delays: the history covers every window.
    for now in range(0, 2000):
        assert autoscaler.target(sample(current=0), float(now)) == 0
    assert autoscaler.current == 0
    # A request arrives: the router holds it until a replica is ready.
    assert autoscaler.target(sample(current=0, rps=0.02, waiting=1), 2000.0) == 1
    # Once it is served nothing waits; the replica still stays a whole
    # downscale delay (the wish of 1 at second 2000 held until 2001).
    for now in range(2001, 3201):
        assert autoscaler.target(sample(current=1, queues=(0.0,)), float(now)) == 1
    assert autoscaler.target(sample(current=1, queues=(0.0,)), 3201.0) == 0


@pytest.mark.parametrize("load", [sample(current=0, waiting=3), sample(current=0, rps=0.5)])
def test_cold_start_on_held_requests_or_any_rate(load):
    spec = autoscaling(min_replicas=0, max_replicas=4)
    drive = Driver(spec, wish=0, current=0)
    drive.run(2000, wish=0)
    assert set(drive.targets) == {0}
    drive.now += 1
    # Even a policy that wishes for nothing gets its replica, and keeps it
    # through the next ticks (the downscale window is covered by now).
    assert drive.step(0, load) == 1
    assert drive.run(100, wish=0) == [1] * 100


def test_cold_start_then_scales_up_as_usual():
    spec = autoscaling(min_replicas=0, max_replicas=8, target_qps_per_replica=1)
    autoscaler = Autoscaler(RequestRateScaling(), spec)
    assert autoscaler.target(sample(current=0), 0.0) == 0
    targets = [autoscaler.target(sample(current=1, rps=5.0, waiting=2), float(now))
               for now in range(1, 303)]
    assert targets[0] == 1 and set(targets[:300]) == {1}
    assert targets[-1] == 5


def test_a_fixed_count_never_moves():
    spec = replica_policy(min_replicas=3, max_replicas=3)
    drive = Driver(spec, wish=0, current=0)
    drive.run(2000, wish=9)
    drive.run(10, wish=0)
    drive.step(0, sample(current=0, waiting=5))
    assert set(drive.targets) == {3}


def test_a_fixed_zero_ignores_a_cold_start():
    drive = Driver(replica_policy(min_replicas=0), wish=0, current=0)
    drive.now += 1
    assert drive.step(0, sample(current=0, waiting=5, rps=1.0)) == 0


def test_queue_length_autoscaling_end_to_end():
    spec = autoscaling(min_replicas=1, max_replicas=6, target_qps_per_replica=None,
                       target_queue_length_per_replica=4, upscale_delay_seconds=60,
                       downscale_delay_seconds=120)
    autoscaler = Autoscaler(scaling_policy(spec), spec)
    now, current = 0.0, 1
    # A sustained queue of 10 per replica adds replicas...
    for _ in range(61):
        current = autoscaler.target(sample(current=current, queues=(10.0,)), now)
        now += 1
    assert current == 3
    # ...an empty queue lets the count fall to min_replicas, after the delay.
    for _ in range(120):
        current = autoscaler.target(sample(current=current, queues=(0.0,) * current), now)
        now += 1
    assert current == 3
    current = autoscaler.target(sample(current=current, queues=(0.0,) * current), now)
    assert current == 1


# -------------------------------------------------------------- load readers


@pytest.fixture
def http_server() -> Iterator:
    """Start servers on 127.0.0.1 answering fixed (status, body) per path; yield a factory."""
    servers = []

    def start(routes: dict[str, tuple[int, bytes]], delay: float = 0.0) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's API
                time.sleep(delay)
                status, body = routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for the next poll.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


VLLM_METRICS = b'''\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-7B, \\"instruct\\" {v2}"} 3.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen2.5-7B, \\"instruct\\" {v2}"} 2.0 1712345678000
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-7B"} 64.0
vllm:num_requests_waiting_by_reason{reason="preempted"} 7.0
'''


def test_queue_length_sums_vllm_waiting_over_engines(http_server):
    url = http_server({"/metrics": (200, VLLM_METRICS)})
    assert queue_length(url) == 5.0
    assert queue_length(url + "/") == 5.0


def test_queue_length_reads_sglang(http_server):
    body = b'sglang:num_queue_reqs{model_name="m",tp_rank="0"} 4\nsglang:num_running_reqs 9\n'
    assert queue_length(http_server({"/metrics": (200, body)})) == 4.0


def test_queue_length_takes_other_metric_names(http_server):
    url = http_server({"/metrics": (200, VLLM_METRICS)})
    assert queue_length(url, names=("vllm:num_requests_running",)) == 64.0
    assert queue_length(url, names=("tgi_queue_size",)) is None


@pytest.mark.parametrize("text, total", [
    ("vllm:num_requests_waiting 2", 2.0),
    ("vllm:num_requests_waiting{} 2", 2.0),
    ("  vllm:num_requests_waiting  2  ", 2.0),
    ("vllm:num_requests_waiting 2 1712345678000", 2.0),
    ("vllm:num_requests_waiting 1.5e1", 15.0),
    ('vllm:num_requests_waiting{a="x y, z"} 1\nvllm:num_requests_waiting{a="w"} 2', 3.0),
    ('vllm:num_requests_waiting{a="q\\"}\\" 9"} 1', 1.0),  # escaped quotes around a brace
    ('vllm:num_requests_waiting{a="back\\\\"} 4', 4.0),    # an escaped backslash ends the value
    ("vllm:num_requests_waiting NaN\nvllm:num_requests_waiting 2", 2.0),
    ("vllm:num_requests_waiting 1\nsglang:num_queue_reqs 2", 3.0),
    ("vllm:num_requests_waiting 1 # {trace_id=\"a\"} 1.0", 1.0),  # OpenMetrics exemplar
    ("# vllm:num_requests_waiting 5\nvllm:num_requests_waiting 0\n# EOF", 0.0),
    # Absent, only NaN or infinite, or not a sample: no number.
    ("", None),
    ("vllm:num_requests_running 3", None),
    ("vllm:num_requests_waiting NaN", None),
    ("vllm:num_requests_waiting +Inf", None),
    ("vllm:num_requests_waiting", None),
    ("vllm:num_requests_waiting three", None),
    ('vllm:num_requests_waiting{a="unterminated} 3', None),
    ("vllm:num_requests_waiting_total 3", None),
    ("<html><body>vllm:num_requests_waiting</body></html>", None),
])
def test_sum_metric_parses_the_exposition_format(text, total):
    assert sum_metric(text, QUEUE_METRICS) == total


@pytest.mark.parametrize("status, body", [
    (500, b"vllm:num_requests_waiting 3\n"),   # an error page is not a reading
    (200, b"\xff\xfe\x00garbage\x00"),
    (200, b"<html>loading</html>"),
])
def test_queue_length_is_none_for_bad_answers(http_server, status, body):
    assert queue_length(http_server({"/metrics": (status, body)})) is None


def test_queue_length_is_none_without_a_metrics_page(http_server):
    assert queue_length(http_server({})) is None


@pytest.mark.parametrize("url", ["not a url", "http://", "ftp://127.0.0.1:1"])
def test_readers_are_none_for_malformed_urls(url):
    assert queue_length(url) is None
    assert router_load(url, 60) is None


def test_readers_are_none_when_nothing_listens(dead_url):
    assert queue_length(dead_url, timeout=0.5) is None
    assert router_load(dead_url, 60, timeout=0.5) is None


def test_readers_give_up_after_their_timeout(http_server):
    url = http_server({"/metrics": (200, b"vllm:num_requests_waiting 1\n"),
                       "/-/stats": (200, b'{"requests_by_second": [], "waiting": 0}')}, delay=3.0)
    started = time.monotonic()
    assert queue_length(url, timeout=0.2) is None
    assert router_load(url, 60, timeout=0.2) is None
    assert time.monotonic() - started < 2.0


def stats(buckets, waiting=0) -> bytes:
    return json.dumps({"requests_by_second": buckets, "waiting": waiting, "window_s": 60}).encode()


def test_router_load_averages_the_window(http_server):
    now = 1000.5
    buckets = [[930, 100], [939, 100],       # before the window
               [940, 6], [970, 30], [1000, 24],
               [1001, 60]]                   # counted after ``now`` was read: still load
    url = http_server({"/-/stats": (200, stats(buckets, waiting=3))})
    assert router_load(url, 60, now=now) == ((6 + 30 + 24 + 60) / 60, 3)
    assert router_load(url, 10, now=now) == ((24 + 60) / 10, 3)


def test_router_load_defaults_to_the_clock(http_server):
    second = int(time.time())
    url = http_server({"/-/stats": (200, stats([[second - 5, 12], [second - 500, 99]]))})
    assert router_load(url, 60) == (12 / 60, 0)


def test_router_load_of_an_idle_router(http_server):
    assert router_load(http_server({"/-/stats": (200, stats([]))}), 60, now=5.0) == (0.0, 0)


@pytest.mark.parametrize("body", [
    b"not json",
    b"[1, 2]",
    b'{"waiting": 0}',
    b'{"requests_by_second": []}',
    b'{"requests_by_second": {"940": 3}, "waiting": 0}',
    b'{"requests_by_second": [[940]], "waiting": 0}',
    b'{"requests_by_second": [[940, 3, 1]], "waiting": 0}',
    b'{"requests_by_second": [["940", 3]], "waiting": 0}',
    b'{"requests_by_second": [[940, -3]], "waiting": 0}',
    b'{"requests_by_second": [[940, 1.5]], "waiting": 0}',
    b'{"requests_by_second": [[940, true]], "waiting": 0}',
    b'{"requests_by_second": [], "waiting": -1}',
    b'{"requests_by_second": [], "waiting": true}',
    b'{"requests_by_second": [], "waiting": "2"}',
    b'{"requests_by_second": null, "waiting": 0}',
    b"[" * 100000 + b"]" * 100000,
], ids=lambda body: body[:40].decode())
def test_router_load_is_none_for_malformed_stats(http_server, body):
    assert router_load(http_server({"/-/stats": (200, body)}), 60, now=1000.0) is None


def test_router_stats_returns_the_report_as_it_is(http_server):
    report = {"requests_by_second": [[990, 5]], "waiting": 1, "in_flight": {"http://r1": 2}}
    assert router_stats(http_server({"/-/stats": (200, json.dumps(report).encode())})) == report


@pytest.mark.parametrize("status, body", [(200, b"[1, 2]"), (200, b"{"), (404, b"{}")])
def test_router_stats_is_none_unless_a_json_object(http_server, status, body):
    assert router_stats(http_server({"/-/stats": (status, body)})) is None


def test_router_load_is_none_for_an_error_answer(http_server):
    assert router_load(http_server({"/-/stats": (503, stats([[990, 5]]))}), 60, now=1000.0) is None


def test_router_load_needs_a_positive_window():
    with pytest.raises(ValueError):
        router_load("http://127.0.0.1:1", 0)


# ------------------------------------------------- target_qps_per_replica per accelerator


def gpu_sample(rps: float, alive: tuple[str | None, ...], ready: tuple[str | None, ...] | None = None):
    """A load sample of replicas on the given accelerators (None: still provisioning)."""
    ready = alive if ready is None else ready
    return LoadSample(current_replicas=len(alive), ready_replicas=len(ready), requests_per_second=rps,
                      queue_lengths=(), replica_accelerators=alive, ready_accelerators=ready)


@pytest.mark.parametrize("rps, alive, ready, wanted", [
    (25.0, ("H100",), None, 2),               # 20 covered by the H100; 5 more needs one (at 20)
    (15.0, ("H100", "A100"), None, 1),        # the H100 alone covers 15: the A100 may go
    (25.0, ("H100", "A100"), None, 2),        # 30 of capacity, both needed
    (0.0, ("H100", "A100"), None, 0),         # no traffic, no replica wished (min_replicas clamps)
    (35.0, ("H100", "A100"), None, 3),        # 5 over 30: one more
    (8.0, ("a100",), None, 1),                # names match case-insensitively
    (25.0, ("T4",), None, 2),                 # unlisted: the smallest target (10); 15 more at 20: one
    (15.0, ("H100", None), ("H100",), 1),     # the ready H100 covers it
    (25.0, ("H100", None), ("H100",), 2),     # ready ones fall short: keep the launching one too
    (5.0, (), (), 1),                         # nothing alive: min_replicas
])
def test_request_rate_per_accelerator_counts_each_replicas_capacity(rps, alive, ready, wanted):
    spec = autoscaling(target_qps_per_replica={"H100": 20, "A100:1": 10})
    assert spec.target_qps_per_replica == {"H100": 20.0, "A100": 10.0}
    assert RequestRateScaling().desired_replicas(gpu_sample(rps, alive, ready), spec) == wanted


@pytest.mark.parametrize("target, expected", [
    ({}, "target_qps_per_replica is an empty mapping"),
    ({"H100": 0}, "target_qps_per_replica.H100 must be greater than 0"),
    ({"H100": "fast"}, "must be a number of requests per second"),
    ({"H 100": 5}, "bad accelerator 'H 100'"),
    ("fast", "must be a number of requests per second"),
])
def test_bad_per_accelerator_targets_are_one_line(target, expected):
    with pytest.raises(SpecError) as caught:
        autoscaling(target_qps_per_replica=target)
    line = caught.value.one_line()
    assert expected in line and "service.replica_policy.target_qps_per_replica" in line
    assert "hint:" in line
