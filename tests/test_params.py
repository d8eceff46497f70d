"""params.yaml is validated before any work, with errors that name the key."""

import subprocess
import sys
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pipeline.errors import ParamsError
from pipeline.params import Params, flatten, load_params, parse_params, profile_overrides
from tests.conftest import REPO, tiny_params, with_overrides


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
    (lambda p: p["fetch_teacher"].update(sha256="a" * 64), "fetch_teacher.sha256", "random: source"),
    (lambda p: p.update(distil={}), "distil", "unknown key"),
])
def test_invalid_params_name_the_key_and_the_expectation(mutate, key, expected):
    data = tiny_params()
    mutate(data)
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    message = str(err.value)
    assert f"params.yaml: {key}: " in message and expected in message


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


def test_an_empty_or_partial_params_file_is_refused_naming_what_is_missing(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "empty.yaml")
    assert str(err.value).startswith(f"{tmp_path / 'empty.yaml'}: missing profile, metric_networks, "
                                     "fetch_teacher, distill, search, evaluate, export (")
    partial = {k: v for k, v in tiny_params().items() if k not in ("search", "export")}
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump(partial))
    check = subprocess.run([sys.executable, "-m", "pipeline.params", "check", str(tmp_path / "partial.yaml")],
                           cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 2 and check.stderr.count("\n") == 1
    assert "partial.yaml: missing search, export (" in check.stderr and "overrides NAME" in check.stderr


def _fields(model: type[BaseModel], value: BaseModel | None, prefix: str = "") -> dict[str, Any]:
    """key path -> value (``value``'s, or the schema default where ``value`` is None) of every
    key that is not itself a section."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann, given = field.annotation, None if value is None else getattr(value, name)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_fields(ann, given, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field.get_default() if value is None else given
    return out


def _is_set(data: dict[str, Any], key: str) -> bool:
    *sections, name = key.split(".")
    for section in sections:
        data = data.get(section) or {}
    return name in data


def test_schema_defaults_never_stand_in_for_params_yaml():
    """Asserted: not that the schema's defaults equal params.yaml's values (they are the papers'
    settings for real data and differ on many keys: distill.lr 5e-4 vs 0.02, a 512-channel
    teacher vs the 64px offline one) but that they cannot replace them: params.yaml sets every
    key, and a params file without a section holding a differing key is refused."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    values = _fields(Params, load_params(REPO / "params.yaml"))
    defaults = _fields(Params, None)
    unset = [k for k in values if not _is_set(data, k)]
    assert not unset, f"params.yaml must set every key, or the schema's default applies: {unset}"
    differ = {k for k in values if values[k] != defaults[k]}
    for section in sorted({k.split(".")[0] for k in differ}):
        with pytest.raises(ParamsError, match=f"params.yaml: missing {section} "):
            parse_params({k: v for k, v in data.items() if k != section}, "params.yaml")


def test_a_repeated_key_is_refused_naming_it_and_both_lines(tmp_path):
    text = yaml.safe_dump(tiny_params(), sort_keys=False)
    (tmp_path / "params.yaml").write_text(text + "distill:\n  steps: 3\n")
    first = text.splitlines().index("distill:") + 1
    last = len(text.splitlines()) + 1
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "params.yaml")
    assert str(err.value) == f"{tmp_path / 'params.yaml'}: duplicate key 'distill' (lines {first} and {last})"
    (tmp_path / "profile.yaml").write_text("distill:\n  lr: 0.1\n  steps: 5\n  lr: 0.2\n")
    with pytest.raises(ParamsError, match=r"profile.yaml: duplicate key 'lr' \(lines 2 and 4\)$"):
        profile_overrides(tmp_path / "profile.yaml", REPO / "params.yaml")


@pytest.mark.parametrize("section, overrides, key, value", [
    ("distill", {"steps": 2, "elastic": {"enabled": True, "start_step": 10}},
     "distill.elastic.start_step", "got 10"),
    ("distill", {"student": {"channels": {4: 0}}}, "distill.student.channels.4", "got 0"),
    ("distill", {"betas": [0.9]}, "distill.betas", "got [0.9]"),
    ("distill", {"adversarial": {"real_images": ["a"] * 100}}, "distill.adversarial.real_images",
     "got ['a', 'a', "),
    ("evaluate", {"reference": {"source": "npz"}}, "evaluate.reference.path", "'npz'"),
    ("export", {"inputs": ["w", "w"]}, "export.inputs", "got ['w', 'w']"),
    ("search", {"budgets": {"a": [1]}}, "search.budgets.a", "got [1]"),
])
def test_every_params_error_is_one_short_line_naming_the_key(section, overrides, key, value):
    data = tiny_params()
    with_overrides(data[section], overrides)
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    message = str(err.value)
    assert message.startswith(f"params.yaml: {key}: ") and value in message
    assert "\n" not in message and len(message) < 200 and "https://" not in message


@pytest.mark.parametrize("source, what", [
    ("https://user:hunter2@host/teacher.pt", "user:password@ in the URL"),
    ("https://ghp_tok3n@host/teacher.pt", "user:password@ in the URL"),
    ("https://host/teacher.pt?token=hunter2", "query parameter 'token'"),
    ("https://bucket.s3.amazonaws.com/t.pt?X-Amz-Credential=AK&X-Amz-Signature=hunter2",
     "query parameter 'X-Amz-Credential'"),
    ("s3://AKIA:hunter2@bucket/teacher.pt", "user:password@ in the URL"),
])
def test_a_credential_in_the_source_is_refused_and_never_echoed(source, what, tmp_path):
    """Params are recorded in dvc.lock, DVC's run cache and MLflow: a credential in
    fetch_teacher.source would be written to all three. Refused before any stage runs."""
    params = tiny_params(source)
    with pytest.raises(ParamsError) as refused:
        parse_params(params)
    message = str(refused.value)
    assert f"fetch_teacher.source: holds a credential ({what})" in message
    assert "~/.netrc" in message and "STYLEGAN_MOBILE_HTTP_TOKEN" in message
    assert "hunter2" not in message and "tok3n" not in message and "\n" not in message


def test_a_plain_query_string_is_not_a_credential():
    assert parse_params(tiny_params("https://host/teacher.pt?download=1")).fetch_teacher.source \
        == "https://host/teacher.pt?download=1"
