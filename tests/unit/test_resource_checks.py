"""What `resource_dict` accepts and rejects (`pmp.client.resources`): every
mistake is a ValueError whose message names the key or parameter and says
what is allowed."""

import os

import pytest
from pmp.client import resources
from pmp.client.resources import RESOURCE_KEYS, merge_resource_dict

DEFAULTS = {
    "cores": 1,
    "threads_per_core": 1,
    "gpus_per_core": 0,
    "oversubscribe": False,
    "cwd": None,
    "command_line_argument_lst": [],
}


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("cores", 0, ">= 1"),
        ("cores", 2.0, "must be an int"),
        ("cores", True, "must be an int"),
        ("cores", 2**32, f"<= {2**32 - 1}"),
        ("threads_per_core", "2", "must be an int"),
        ("gpus_per_core", -1, ">= 0"),
        ("restart_limit", -1, ">= 0"),
        ("oversubscribe", "yes", "True or False"),
        ("hostname_localhost", 1, "True or False"),
        ("cwd", 3, "a path or None"),
        ("cwd", "", "a directory's path or None"),
        ("command_line_argument_lst", "--flag", "a list of strings"),
        ("command_line_argument_lst", ["--a", 2], "must hold strings"),
        ("command_line_argument_lst", ["--a\n--b"], "control character"),
        ("cache_key", "../escape", "letters, digits"),
        ("cache_key", 7, "letters, digits"),
        ("cache_directory", "", "say '.' for the current directory"),
        ("cache_directory", 5, "must be a path"),
    ],
)
def test_a_bad_value_is_a_value_error_naming_its_key_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ValueError, match=f"resource_dict key '{key}'") as raised:
        merge_resource_dict(DEFAULTS, {key: value})
    assert allowed in str(raised.value)


def test_an_unknown_key_is_named_with_every_key_that_is_allowed():
    with pytest.raises(ValueError) as raised:
        merge_resource_dict(DEFAULTS, {"corez": 2})
    message = str(raised.value)
    assert "'corez'" in message
    for key in RESOURCE_KEYS:
        assert key in message


def test_a_resource_dict_that_is_no_dict_is_refused_naming_it():
    with pytest.raises(ValueError, match="resource_dict must be a dict, got list"):
        merge_resource_dict(DEFAULTS, [("cores", 2)])


def test_good_values_override_the_defaults_without_changing_either(tmp_path):
    per_call = {"cores": 2, "cwd": str(tmp_path), "command_line_argument_lst": ("-v",)}
    merged = merge_resource_dict(DEFAULTS, per_call)
    assert merged == {
        **DEFAULTS,
        "cores": 2,
        "cwd": str(tmp_path),
        "command_line_argument_lst": ["-v"],
    }
    assert DEFAULTS["cores"] == 1
    assert per_call["command_line_argument_lst"] == ("-v",)
    assert merge_resource_dict(DEFAULTS, None) is DEFAULTS


def test_a_cwd_is_made_absolute_and_must_be_an_existing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    (tmp_path / "file").write_text("")
    assert resources.check_cwd("cwd", "here") == str(tmp_path / "here")
    assert resources.check_cwd("cwd", None) is None
    with pytest.raises(ValueError, match="cwd .*missing.* does not exist"):
        resources.check_cwd("cwd", "missing")
    with pytest.raises(ValueError, match="cwd .*file.* is not a directory"):
        resources.check_cwd("cwd", tmp_path / "file")


def test_a_cache_directory_is_expanded_and_may_not_be_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resources.check_directory("cache_directory", "~/store") == str(tmp_path / "store")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cache_directory .*file.* is not a directory"):
        resources.check_directory("cache_directory", tmp_path / "file")


def test_a_control_character_in_a_directory_is_refused_naming_the_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"cache_directory holds the control character '\\n'"):
        resources.check_directory("cache_directory", os.path.join(tmp_path, "a\nb"))


@pytest.mark.parametrize(("value", "minimum"), [(0, 0), (5, 1), (2**32 - 1, 0)])
def test_an_int_within_bounds_is_returned(value, minimum):
    assert resources.check_int("max_workers", value, minimum) == value


def test_a_nested_cache_key_is_accepted():
    assert resources.check_key("cache_key", "group/run-1.v2") == "group/run-1.v2"
