"""TLS, mTLS and bearer tokens on gRPC (certificates made in the test), secure-by-default `lipstream serve`,
the client's credentials and its CLI flags, and a SIGHUP reload of the token file in a real serve process."""

from __future__ import annotations

import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lipstream.client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    ResourceExhaustedError,
    SessionStarted,
    SessionStats,
    UnauthenticatedError,
    UnavailableError,
    tls_credentials,
)
from lipstream.client.cli import ExitCode
from lipstream.client.cli import main as cli_main
from lipstream.client.credentials import call_metadata, token_metadata
from lipstream.server.auth import UNAUTHENTICATED_MESSAGE, UNKNOWN_TOKEN_MESSAGE
from lipstream.server.engine import MAX_AVATAR_IMAGE_BYTES
from lipstream.server.main import build_parser, exposure_check
from lipstream.server.security import TLSFiles, TokenSet, is_loopback, missing_protection
from lipstream.server.servicer import default_max_concurrent_rpcs, max_receive_bytes, server_options
from lipstream.v1 import lipstream_pb2 as pb

from tests.certs import Certificates, make_certificates
from tests.servers import RunningServer, running_server, tiny_engine

TOKEN = "test-token-5f1c2a"
HOW_TO = (
    "send metadata 'authorization: Bearer <token>' (lipstream --token, LIPSTREAM_TOKEN, Client(token=...))"
)
LIPSTREAM = pb.DESCRIPTOR.services_by_name["LipStream"]


@pytest.fixture(autouse=True)
def no_client_credentials_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads these: a developer's own must not change what a test sends."""
    for name in ("LIPSTREAM_TOKEN", "LIPSTREAM_CA_CERT", "LIPSTREAM_CLIENT_CERT", "LIPSTREAM_CLIENT_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text(f"# the kiosk\n{TOKEN}\n\n  another-token  \n")
    return path


@pytest.fixture(scope="module")
def tls_server(certs: Certificates, token_file: Path) -> Iterator[RunningServer]:
    """TLS (no client certificates) and tokens, the web page on."""
    tls = TLSFiles(certs.server_cert, certs.server_key)
    with running_server(tiny_engine(), web=True, tls=tls, tokens=TokenSet(token_file)) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(certs: Certificates) -> Iterator[RunningServer]:
    """TLS that requires a client certificate signed by the test CA; no tokens."""
    with running_server(tiny_engine(), tls=TLSFiles(certs.server_cert, certs.server_key, certs.ca)) as server:
        yield server


# -- the decision: loopback, or TLS and tokens, or --insecure -------------------------------------------
def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LocalHost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "192.168.0.5", "example.com", "localhost.example.com"):
        assert not is_loopback(host), host


def test_missing_protection_names_the_flags() -> None:
    assert missing_protection("127.0.0.1", tls=False, tokens=False) is None
    assert missing_protection("0.0.0.0", tls=True, tokens=True) is None
    both = missing_protection("0.0.0.0", tls=False, tokens=False)
    assert both == "TLS (--tls-cert PATH --tls-key PATH) and tokens (--auth-token-file PATH)"
    assert missing_protection("10.0.0.2", tls=True, tokens=False) == "tokens (--auth-token-file PATH)"
    assert missing_protection("10.0.0.2", tls=False, tokens=True) == "TLS (--tls-cert PATH --tls-key PATH)"


def test_exposure_check_refuses_or_warns_with_insecure(caplog: pytest.LogCaptureFixture) -> None:
    parse = build_parser().parse_args
    refusal = exposure_check(parse(["--host", "0.0.0.0"]))
    assert refusal is not None
    assert all(flag in refusal for flag in ("--tls-cert", "--tls-key", "--auth-token-file", "--insecure"))
    assert exposure_check(parse(["--host", "127.0.0.1"])) is None
    protected = ["--host", "0.0.0.0", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--auth-token-file", "t"]
    assert exposure_check(parse(protected)) is None
    with caplog.at_level(logging.WARNING, logger="lipstream.serve"):
        assert exposure_check(parse(["--host", "0.0.0.0", "--insecure"])) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--insecure" in warnings[0] and "--auth-token-file" in warnings[0]


def test_security_flags_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSTREAM_TLS_CERT", "c.pem")
    monkeypatch.setenv("LIPSTREAM_TLS_KEY", "k.pem")
    monkeypatch.setenv("LIPSTREAM_TLS_CLIENT_CA", "ca.pem")
    monkeypatch.setenv("LIPSTREAM_AUTH_TOKEN_FILE", "tokens.txt")
    monkeypatch.setenv("LIPSTREAM_WEB_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    args = build_parser().parse_args(["--web-allowed-origin", "https://c.example"])
    assert (args.tls_cert, args.tls_key, args.tls_client_ca) == ("c.pem", "k.pem", "ca.pem")
    assert args.auth_token_file == "tokens.txt"
    assert args.web_allowed_origin == ["https://a.example", "https://b.example", "https://c.example"]
    assert not args.insecure
    monkeypatch.setenv("LIPSTREAM_INSECURE", "1")
    assert build_parser().parse_args([]).insecure


def test_serve_refuses_a_non_loopback_host_before_loading_or_binding() -> None:
    command = [
        sys.executable,
        "-m",
        "lipstream.server",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--web-port",
        "0",
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIPSTREAM_TLS", "LIPSTREAM_AUTH", "LIPSTREAM_INS"))
    }
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lipstream serve: --host 0.0.0.0 is reachable from other machines")
    assert all(flag in lines[0] for flag in ("--tls-cert", "--tls-key", "--auth-token-file", "--insecure"))
    assert "loading models" not in result.stdout + result.stderr


def test_bad_tls_and_token_files_exit_with_the_file_named(
    tmp_path: Path, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    from lipstream.server.main import main

    assert main(["--tls-cert", str(certs.server_cert), "--web-port", "0"]) == 2
    assert "TLS needs both --tls-cert PATH and --tls-key PATH" in capsys.readouterr().err
    missing = tmp_path / "nope.pem"
    assert main(["--tls-cert", str(missing), "--tls-key", str(certs.server_key), "--web-port", "0"]) == 2
    assert f"--tls-cert {missing}: No such file or directory" in capsys.readouterr().err
    # the client's key with the server's certificate: a pair that does not match
    assert (
        main(["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.client_key), "--web-port", "0"])
        == 2
    )
    assert "cannot load the TLS files" in capsys.readouterr().err
    empty = tmp_path / "empty-tokens"
    empty.write_text("# nothing yet\n\n")
    assert main(["--auth-token-file", str(empty), "--web-port", "0"]) == 2
    assert "holds no token" in capsys.readouterr().err


# -- server limits -----------------------------------------------------------------------------------------
def test_server_options_bound_calls_and_messages_above_any_valid_request() -> None:
    engine = tiny_engine()
    options = server_options(engine)
    assert options["maximum_concurrent_rpcs"] == default_max_concurrent_rpcs(16) == 16 * 4 + 16
    channel_args = dict(options["options"])
    # The largest valid request at the default bounds is a config with a 4 MiB avatar_image.
    assert channel_args["grpc.max_receive_message_length"] == max_receive_bytes(10_000)
    assert MAX_AVATAR_IMAGE_BYTES < max_receive_bytes(10_000) <= MAX_AVATAR_IMAGE_BYTES + (1 << 20)
    assert max_receive_bytes(1_000_000) > 4 * 1_000_000  # a raised text bound raises the message bound
    assert channel_args["grpc.keepalive_time_ms"] > 0 and channel_args["grpc.keepalive_permit_without_calls"]
    assert server_options(engine, 7)["maximum_concurrent_rpcs"] == 7


def test_text_at_the_bound_reaches_the_server_and_junk_beyond_the_message_bound_does_not() -> None:
    with running_server(tiny_engine()) as server, Client(server.target, timeout=30) as client:
        # 4-byte characters, one over the text bound: the server's own INVALID_ARGUMENT, not gRPC's size limit
        with pytest.raises(InvalidArgumentError):
            list(client.synthesize("\U0001f600" * 10_001))
        with pytest.raises(Exception) as cut:  # noqa: PT011 (the exact class is the next assertion)
            list(client.synthesize("a" * (max_receive_bytes(10_000) + 1)))
        assert cut.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert client.info().active_sessions == 0


def test_calls_over_the_concurrent_bound_are_refused() -> None:
    with (
        running_server(tiny_engine(), max_concurrent_rpcs=2) as server,
        Client(server.target, timeout=30) as client,
    ):
        conversations = [client.converse(None) for _ in range(2)]
        events = [iter(conversation) for conversation in conversations]
        for stream in events:
            assert isinstance(next(stream), SessionStarted)  # both calls are running
        with pytest.raises(ResourceExhaustedError, match="Concurrent RPC limit"):
            client.info()
        for conversation, stream in zip(conversations, events, strict=True):
            conversation.end()
            assert isinstance(list(stream)[-1], SessionStats)
        assert client.info().active_sessions == 0


# -- TLS and tokens over gRPC -------------------------------------------------------------------------------
def _call_every_rpc(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> dict[str, grpc.RpcError]:
    """Calls each LipStream method (from the service descriptor, so a new RPC is covered too) with a valid
    minimal request; returns the errors by method name."""
    errors = {}
    for method in LIPSTREAM.methods:
        path = f"/{LIPSTREAM.full_name}/{method.name}"
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        codecs = {"request_serializer": lambda m: m.SerializeToString(), "response_deserializer": None}
        request = request_type()
        if method.name == "Converse":
            request = pb.ConverseRequest(config=pb.SessionConfig())
        elif method.name == "Synthesize":
            request = pb.SynthesizeRequest(config=pb.SessionConfig(), text="Hi.")
        elif method.name == "SayOnChannel":
            request = pb.SayOnChannelRequest(channel="lobby", text="Hi.")
        elif method.name == "StopChannel":
            request = pb.StopChannelRequest(channel="lobby")
        call: Callable[..., object]
        try:
            if method.client_streaming and method.server_streaming:
                call = channel.stream_stream(path, **codecs)
                list(call(iter([request]), metadata=metadata, timeout=30))  # type: ignore[call-overload]
            elif method.server_streaming:
                call = channel.unary_stream(path, **codecs)
                list(call(request, metadata=metadata, timeout=30))  # type: ignore[call-overload]
            else:
                call = channel.unary_unary(path, **codecs)
                response_type.FromString(call(request, metadata=metadata, timeout=30))  # type: ignore[arg-type]
        except grpc.RpcError as error:
            errors[method.name] = error
    return errors


def test_every_lipstream_rpc_needs_a_token_with_a_message_that_says_how(
    tls_server: RunningServer, certs: Certificates
) -> None:
    credentials = tls_credentials(certs.ca)
    with grpc.secure_channel(tls_server.target, credentials) as channel:
        for metadata, message in (
            ((), UNAUTHENTICATED_MESSAGE),
            ((("authorization", "Bearer wrong-token"),), UNKNOWN_TOKEN_MESSAGE),
            ((("authorization", TOKEN),), UNAUTHENTICATED_MESSAGE),  # not "Bearer <token>"
            ((("authorization", f"Basic {TOKEN}"),), UNAUTHENTICATED_MESSAGE),
        ):
            errors = _call_every_rpc(channel, metadata)
            assert sorted(errors) == sorted(m.name for m in LIPSTREAM.methods), metadata
            for name, error in errors.items():
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, error)
                assert error.details() == message and HOW_TO in message, name
        for token in (TOKEN, "another-token"):
            errors = _call_every_rpc(channel, (("authorization", f"Bearer {token}"),))
            # Let through: the channel calls reach the servicer, which has no display on "lobby".
            assert {name: error.code() for name, error in errors.items()} == {
                "SayOnChannel": grpc.StatusCode.NOT_FOUND, "StopChannel": grpc.StatusCode.NOT_FOUND
            }
    assert tls_server.engine.active_sessions == 0


def test_health_and_reflection_stay_open_without_a_token(
    tls_server: RunningServer, certs: Certificates
) -> None:
    with grpc.secure_channel(tls_server.target, tls_credentials(certs.ca)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", LIPSTREAM.full_name):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=30))
        names = {s.name for s in answer.list_services_response.service}
        assert LIPSTREAM.full_name in names and "grpc.health.v1.Health" in names


def test_client_with_tls_and_a_token_speaks(tls_server: RunningServer, certs: Certificates) -> None:
    with Client(tls_server.target, credentials=tls_credentials(certs.ca), token=TOKEN, timeout=60) as client:
        assert client.info().default_voice == "tiny"
        events = list(client.synthesize("Hello there."))
        assert isinstance(events[-1], SessionStats)  # the stream ran to its end
        with client.converse("Over TLS.") as conversation:
            for _ in conversation:
                pass
        assert conversation.stats is not None and conversation.stats.audio_seconds > 0
    with Client(tls_server.target, credentials=tls_credentials(certs.ca), timeout=30) as client:
        with pytest.raises(UnauthenticatedError, match=re.escape(HOW_TO)):
            client.info()
        with pytest.raises(UnauthenticatedError, match="needs a bearer token"):
            list(client.synthesize("Hi."))
    with Client(tls_server.target, credentials=tls_credentials(certs.ca), token="nope", timeout=30) as client:
        with pytest.raises(UnauthenticatedError, match="not one this server accepts"):
            list(client.converse("Hi."))


async def test_async_client_with_tls_and_a_token(tls_server: RunningServer, certs: Certificates) -> None:
    credentials = tls_credentials(certs.ca)
    async with AsyncClient(tls_server.target, credentials=credentials, token=TOKEN, timeout=60) as client:
        assert (await client.info()).default_voice == "tiny"
        stream = client.synthesize("Async over TLS.")
        async for _ in stream:
            pass
        assert stream.stats is not None
    async with AsyncClient(tls_server.target, credentials=credentials, timeout=30) as client:
        with pytest.raises(UnauthenticatedError, match=re.escape(HOW_TO)):
            await client.voices()


def test_plaintext_or_an_unknown_ca_cannot_reach_a_tls_server(
    tls_server: RunningServer, certs: Certificates
) -> None:
    with (
        Client(tls_server.target, token=TOKEN, timeout=30) as client,
        pytest.raises(UnavailableError) as error,
    ):
        client.info()
    assert "tls_credentials(ca_cert=...)" in " ".join(getattr(error.value, "__notes__", []))
    with Client(
        tls_server.target, credentials=tls_credentials(certs.other_ca), token=TOKEN, timeout=30
    ) as client:
        with pytest.raises(UnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            client.info()


def test_mtls_needs_a_client_certificate_from_the_ca(mtls_server: RunningServer, certs: Certificates) -> None:
    for refused in (
        tls_credentials(certs.ca),
        tls_credentials(certs.ca, certs.stranger_cert, certs.stranger_key),
    ):
        with Client(mtls_server.target, credentials=refused, timeout=30) as client:
            with pytest.raises(UnavailableError):
                client.info()
    with Client(
        mtls_server.target,
        credentials=tls_credentials(certs.ca, certs.client_cert, certs.client_key),
        timeout=30,
    ) as client:
        assert client.info().default_voice == "tiny"


def test_the_page_is_served_over_https_with_the_same_pair(
    tls_server: RunningServer, certs: Certificates
) -> None:
    assert tls_server.web_url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(certs.ca))
    with urllib.request.urlopen(tls_server.web_url, context=context, timeout=30) as response:
        assert response.status == 200 and b"<html" in response.read().lower()
    with pytest.raises(OSError):  # the certificate of an unknown CA
        urllib.request.urlopen(tls_server.web_url, context=ssl.create_default_context(), timeout=30)


# -- client side --------------------------------------------------------------------------------------------
def test_token_metadata_and_its_mistakes() -> None:
    assert token_metadata(" abc.DEF-123\n") == ("authorization", "Bearer abc.DEF-123")
    for bad in ("", "  \n", "two words", "caf\u00e9", "tab\there"):
        with pytest.raises(ValueError) as error:
            token_metadata(bad)
        assert bad.strip() not in str(error.value) or not bad.strip()  # the token is never echoed
    assert call_metadata(None, [("x-a", "1")]) == (("x-a", "1"),)
    assert call_metadata("t", [("x-a", "1")]) == (("x-a", "1"), ("authorization", "Bearer t"))
    with pytest.raises(ValueError, match="pass the token once"):
        call_metadata("t", [("Authorization", "Bearer u")])


def test_tls_credentials_check_their_files(tmp_path: Path, certs: Certificates) -> None:
    assert isinstance(tls_credentials(), grpc.ChannelCredentials)
    with pytest.raises(ValueError, match="needs both client_cert and client_key"):
        tls_credentials(certs.ca, client_cert=certs.client_cert)
    with pytest.raises(ValueError, match=r"ca_cert .*missing\.pem: No such file"):
        tls_credentials(tmp_path / "missing.pem")


def test_cli_tls_and_token_flags(
    tls_server: RunningServer,
    certs: Certificates,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ["--target", tls_server.target, "--timeout", "30"]
    assert cli_main([*base, "--ca-cert", str(certs.ca), "--token", TOKEN, "info", "--json"]) == ExitCode.OK
    assert '"default_voice": "tiny"' in capsys.readouterr().out
    monkeypatch.setenv("LIPSTREAM_TOKEN", TOKEN)
    monkeypatch.setenv("LIPSTREAM_CA_CERT", str(certs.ca))
    assert cli_main([*base, "voices"]) == ExitCode.OK
    assert "tiny" in capsys.readouterr().out
    monkeypatch.delenv("LIPSTREAM_TOKEN")
    assert cli_main([*base, "info"]) == ExitCode.UNAUTHENTICATED
    err = capsys.readouterr().err
    assert "UNAUTHENTICATED" in err and HOW_TO in err
    monkeypatch.delenv("LIPSTREAM_CA_CERT")
    assert cli_main([*base, "--token", TOKEN, "info"]) == ExitCode.UNAVAILABLE
    assert "pass --ca-cert" in capsys.readouterr().err
    assert cli_main([*base, "--token", "two words", "info"]) == ExitCode.USAGE
    assert "printable ASCII" in capsys.readouterr().err
    assert cli_main([*base, "--client-cert", str(certs.client_cert), "info"]) == ExitCode.USAGE
    assert "--client-cert and --client-key" in capsys.readouterr().err


def test_cli_client_certificate_flags(
    mtls_server: RunningServer, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--target", mtls_server.target, "--timeout", "30", "--ca-cert", str(certs.ca)]
    assert cli_main([*base, "info"]) == ExitCode.UNAVAILABLE
    assert "pass --client-cert and --client-key" in capsys.readouterr().err
    mtls = ["--client-cert", str(certs.client_cert), "--client-key", str(certs.client_key)]
    assert cli_main([*base, *mtls, "info"]) == ExitCode.OK
    assert "tiny" in capsys.readouterr().out


# -- a real `lipstream serve`: TLS, tokens, SIGHUP --------------------------------------------------------
def test_serve_with_tls_and_tokens_reloads_the_tokens_on_sighup(tmp_path: Path, certs: Certificates) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("old-token-1111\n")
    command = [
        sys.executable,
        "-m",
        "lipstream.server",
        "--port",
        "0",
        "--web-port",
        "0",
        "--max-sessions",
        "2",
        "--tls-cert",
        str(certs.server_cert),
        "--tls-key",
        str(certs.server_key),
        "--auth-token-file",
        str(tokens),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []

    def read_until(pattern: str) -> re.Match[str]:
        assert process.stdout is not None
        for line in process.stdout:  # bounded by the process: it prints the line or exits
            output.append(line)
            if match := re.search(pattern, line):
                return match
        pytest.fail(f"no {pattern!r} in the output:\n{''.join(output)}")

    def accepted(token: str) -> bool:
        with Client(target, credentials=tls_credentials(certs.ca), token=token, timeout=30) as client:
            try:
                client.info()
                return True
            except UnauthenticatedError:
                return False

    try:
        target = read_until(r"serving on (\S+)").group(1)
        hints = read_until(r"say something:").group(0) + output[-1]
        assert "--ca-cert" in hints and "LIPSTREAM_TOKEN=$TOKEN lipstream" in hints and "--token" not in hints
        assert accepted("old-token-1111") and not accepted("new-token-2222")
        tokens.write_text("# rotated\nnew-token-2222\n")
        process.send_signal(signal.SIGHUP)
        read_until(r"auth tokens loaded from .*: 1")
        assert accepted("new-token-2222") and not accepted("old-token-1111")
        tokens.write_text("# everything commented out\n")
        process.send_signal(signal.SIGHUP)
        read_until(r"WARNING .*holds no token.*stay in force")
        assert accepted("new-token-2222")  # a bad reread keeps the tokens in force
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    everything = "".join(output)
    assert "old-token-1111" not in everything and "new-token-2222" not in everything  # tokens never logged
