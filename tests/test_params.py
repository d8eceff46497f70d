"""params.yaml is validated before any work, with errors that name the key."""

import subprocess
import sys

import pytest
import yaml

from pipeline.errors import ParamsError
from pipeline.params import flatten, load_params, parse_params, profile_overrides
from tests.conftest import REPO, tiny_params


def test_the_default_params_and_every_profile_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.fetch_teacher.is_random  # the default profile runs offline
    for profile in sorted((REPO / "profiles").glob("*.yaml")):
        flat = profile_overrides(profile, REPO / "params.yaml")
        assert flat["profile"] == profile.stem


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda p: p["fetch_teacher"].update(sourse="x"), "fetch_teacher.sourse", "unknown key"),
    (lambda p: p["fetch_teacher"]["random"].update(resolution=48),
     "fetch_teacher.random.resolution", "power of two"),
    (lambda p: p["fetch_teacher"]["random"].update(resolution="big"),
     "fetch_teacher.random.resolution", "integer"),
    (lambda p: p["fetch_teacher"].update(sha256="abc"), "fetch_teacher.sha256", "64 hexadecimal"),
    (lambda p: p["fetch_teacher"].update(format="onnx"), "fetch_teacher.format", "auto"),
    (lambda p: p["fetch_teacher"]["download"].update(timeout_s=0),
     "fetch_teacher.download.timeout_s", "greater than 0"),
    (lambda p: p["fetch_teacher"].update(sha256="a" * 64), "fetch_teacher", "random: source"),
    (lambda p: p.update(distil={}), "distil", "unknown key"),
])
def test_invalid_params_name_the_key_and_the_expectation(mutate, key, expected):
    data = tiny_params()
    mutate(data)
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    message = str(err.value)
    assert f"  {key}:" in message and expected in message


def test_unreadable_params_files_fail_clearly(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("fetch_teacher: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(tmp_path / "list.yaml")


def test_profile_overrides_print_as_dvc_exp_run_arguments(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(
        {"profile": "p", "fetch_teacher": {"source": "s3://b/k.pt", "random": {"seed": 3}}},
        sort_keys=False))
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.params", "overrides", str(tmp_path / "p.yaml")],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["-S", "++profile=p", "-S", "++fetch_teacher.source=s3://b/k.pt",
                   "-S", "++fetch_teacher.random.seed=3"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"fetch_teacher": {"nope": 1}}))
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline.params", "overrides", str(tmp_path / "bad.yaml")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "fetch_teacher.nope: unknown key" in bad.stderr


def test_flatten_joins_nested_keys_with_dots():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": None}) == {"a.b": 1, "a.c.d": [1], "e": None}
