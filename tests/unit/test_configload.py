"""The shared config cursor: every error names the file, the key path and the reason."""

import pytest

from gslb.common.configload import ConfigError, Section, parse_duration


def load(text):
    return Section.from_yaml_text(text, file="x.yaml")


def test_take_and_done():
    root = load("a: 1\nb: {c: '2s'}\n")
    assert root.take("a", int) == 1
    assert root.section("b").take_duration("c") == 2.0
    root.done()


def test_unknown_key_suggests_spelling():
    root = load("interval: 1\nintreval: 2\n")
    root.take("interval", int)
    with pytest.raises(ConfigError) as err:
        root.done()
    assert str(err.value).startswith("x.yaml: intreval: unknown key (did you mean 'interval'?)")


def test_wrong_type_names_path():
    root = load("pools:\n  - {weight: heavy}\n")
    (item,) = root.sections("pools")
    with pytest.raises(ConfigError, match=r"x.yaml: pools\[0\].weight: expected an integer, got 'heavy'"):
        item.take("weight", int)


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="expected an integer"):
        load("n: true").take("n", int)


def test_required_and_defaults():
    root = load("{}")
    assert root.take("x", int, 5) == 5
    with pytest.raises(ConfigError, match=r"x\.yaml: y: is required"):
        root.take("y", str)


def test_bad_yaml_reports_line():
    with pytest.raises(ConfigError, match=r"x.yaml: <top>: not valid YAML \(line 2"):
        load("a: 1\n b: [\n")


def test_top_level_must_be_mapping():
    with pytest.raises(ConfigError, match="expected a mapping, got list"):
        load("- 1\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        Section.from_file(tmp_path / "nope.yaml")


def test_number_bounds_and_choice_and_ip():
    root = load("n: 0\nmode: fast\nip: 300.1.1.1\n")
    with pytest.raises(ConfigError, match="n: must be >= 1"):
        root.take_number("n", minimum=1)
    with pytest.raises(ConfigError, match="mode: must be one of up, down"):
        root.take_choice("mode", ("up", "down"))
    with pytest.raises(ConfigError, match="ip: not an IP address"):
        root.take_ip("ip")


@pytest.mark.parametrize(("text", "seconds"), [(2, 2.0), ("500ms", 0.5), ("1.5m", 90.0), ("1h", 3600.0),
                                                 ("3", 3.0), ("x", None), (True, None), ([], None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_named_sections_keep_paths():
    root = load("regions:\n  us: {lat: north}\n")
    ((name, sect),) = list(root.named_sections("regions"))
    assert name == "us"
    with pytest.raises(ConfigError, match=r"regions\.us\.lat: expected a number"):
        sect.take("lat", float)
    root.done()


def test_token_inline_from_file_and_refusals(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    conf = tmp_path / "x.yaml"
    assert Section.from_yaml_text("token: abc", file=str(conf)).take_token() == "abc"
    assert Section.from_yaml_text("token_file: token", file=str(conf)).take_token() == "s3cret"
    assert Section.from_yaml_text("{}", file=str(conf)).take_token() is None
    with pytest.raises(ConfigError, match="token_file: give token or token_file, not both"):
        Section.from_yaml_text("{token: a, token_file: token}", file=str(conf)).take_token()
    with pytest.raises(ConfigError, match="token_file: cannot read"):
        Section.from_yaml_text("token_file: missing", file=str(conf)).take_token()
    with pytest.raises(ConfigError, match="token: must not be empty"):
        Section.from_yaml_text("token: ''", file=str(conf)).take_token()
