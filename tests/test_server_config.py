"""`lipstream serve --config`: TOML keys are the flags, flags and env win, bad files are refused by name."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from lipstream.server.config_file import ConfigFileError
from lipstream.server.main import main, parse_args

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lipstream.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_file_values_become_settings_and_flags_and_env_override_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path,
        'max_sessions = 3\ngrace = 2\nidle_timeout = 60\nvoice = "my-voice"\n'
        'web_allowed_origin = ["https://kiosk.example"]\nextra_voice = ["a", "b"]\n',
    )
    _, args = parse_args(["--config", config])
    assert (args.max_sessions, args.grace, args.idle_timeout, args.voice) == (3, 2.0, 60.0, "my-voice")
    assert args.web_allowed_origin == ["https://kiosk.example"]
    assert args.extra_voice == ["a", "b"]

    _, args = parse_args(["--config", config, "--max-sessions", "5"])
    assert args.max_sessions == 5  # the flag wins
    monkeypatch.setenv("LIPSTREAM_MAX_SESSIONS", "7")
    monkeypatch.setenv("LIPSTREAM_GRACE", "9")
    _, args = parse_args(["--config", config])
    assert (args.max_sessions, args.grace) == (7, 9.0)  # so does the environment
    _, args = parse_args(["--config", config, "--max-sessions", "5"])
    assert args.max_sessions == 5


def test_unknown_keys_and_wrong_types_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"unknown keys max_session, web-port;.*max_sessions"):
        parse_args(["--config", write(tmp_path, 'max_session = 3\n"web-port" = 1\n')])
    for line, expected in [
        ('max_sessions = "8"', "an integer"),
        ("max_sessions = true", "an integer"),
        ("grace = [1]", "a number"),
        ("insecure = 1", "true or false"),
        ('extra_voice = "one"', "a list of strings"),
        ("voice = 3", "a string"),
        ('voice_precision = "fp16"', 'one of "fp32", "bf16"'),
    ]:
        with pytest.raises(ConfigFileError, match=expected):
            parse_args(["--config", write(tmp_path, line + "\n")])
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        parse_args(["--config", write(tmp_path, "max_sessions = \n")])
    with pytest.raises(ConfigFileError, match="cannot read the config file"):
        parse_args(["--config", str(tmp_path / "missing.toml")])


def test_main_refuses_a_bad_file_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", write(tmp_path, "bogus = 1\n")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lipstream serve: ") and "bogus" in err and "Traceback" not in err


def test_print_config_reads_back_to_the_same_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, 'max_sessions = 3\nweb_allowed_origin = ["https://a.example"]\n')
    assert main(["--config", config, "--print-config", "--grace", "7"]) == 0
    printed = capsys.readouterr().out
    values = tomllib.loads(printed)
    assert values["max_sessions"] == 3 and values["grace"] == 7.0
    assert values["web_allowed_origin"] == ["https://a.example"]
    _, direct = parse_args(["--config", config, "--grace", "7"])
    _, round_trip = parse_args(["--config", write(tmp_path, printed)])
    assert vars(round_trip) | {"config": ""} == vars(direct) | {"config": ""}


def test_a_non_loopback_host_from_the_file_is_refused_like_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", write(tmp_path, 'host = "0.0.0.0"\n')]) == 2
    assert "--insecure" in capsys.readouterr().err


def test_the_kubernetes_configmap_is_a_valid_config_file(tmp_path: Path) -> None:
    for document in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text()):
        if document and document.get("kind") == "ConfigMap" and "lipstream.toml" in document["data"]:
            _, args = parse_args(["--config", write(tmp_path, document["data"]["lipstream.toml"])])
            assert args.host == "0.0.0.0" and args.insecure
            return
    pytest.fail("deploy/k8s/configmap.yaml holds no lipstream.toml")
