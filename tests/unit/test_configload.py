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
                                                 ("3", 3.0), ("x", None), (True, None), ([], None),
                                                 ("nan", None), ("inf", None), ("-inf", None), ("infs", None),
                                                 ("1e999", None), ("1e306h", None), (float("nan"), None),
                                                 (float("inf"), None), (10**400, None), ("2d", 172800.0)])
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


# -- every error, with its line ------------------------------------------------------------------

_DOC = """\
dns:
  port: "fifty-three"
  timeout: 2s
  colour: blue
regions:
  - name: a
    weight: -1
  - name: b
    wieght: 3
"""


def _build(root: Section) -> dict[str, object]:
    dns = root.section("dns")
    out = {"port": dns.take("port", int, 53), "timeout": dns.take_duration("timeout", 1.0)}
    dns.done()
    regions = []
    for region in root.sections("regions"):
        regions.append((region.take("name", str), region.take_number("weight", 1, minimum=0)))
        region.done()
    out["regions"] = regions
    root.done()
    return out


def test_load_reports_every_error_with_its_line() -> None:
    root = Section.from_yaml_text(_DOC, file="x.yaml")
    with pytest.raises(ConfigError) as info:
        Section.load(root, _build)
    where = sorted(e.where() for e in info.value.errors)
    assert where == [
        "x.yaml:2: dns.port: expected an integer, got 'fifty-three'",
        "x.yaml:4: dns.colour: unknown key; known keys here: port, timeout",
        "x.yaml:7: regions[0].weight: must be >= 0, got -1.0",
        "x.yaml:9: regions[1].wieght: unknown key (did you mean 'weight'?); known keys here: name, weight",
    ]
    assert str(info.value).count("\n") == 3          # one line per problem


def test_a_problem_with_no_way_around_stops_there_with_those_before() -> None:
    doc = _DOC.replace("  - name: b\n", "  - nam: b\n")
    root = Section.from_yaml_text(doc, file="x.yaml")
    with pytest.raises(ConfigError) as info:
        Section.load(root, _build)
    paths = [e.path for e in info.value.errors]
    assert paths == ["dns.port", "dns.colour", "regions[0].weight", "regions[1].name"]
    assert info.value.errors[-1].reason == "is required"
    assert info.value.errors[-1].line == 8            # the list item holding the missing key


def test_outside_load_a_section_raises_at_the_first_problem() -> None:
    root = Section.from_yaml_text(_DOC, file="x.yaml")
    with pytest.raises(ConfigError, match=r"dns.port: expected an integer"):
        _build(root)


def test_a_good_document_loads() -> None:
    root = Section.from_yaml_text("dns: {port: 5353}\nregions: [{name: a}]\n", file="x.yaml")
    assert Section.load(root, _build) == {"port": 5353, "timeout": 1.0, "regions": [("a", 1)]}


def test_lines_follow_anchors_and_merge_keys() -> None:
    doc = "base: &b {port: 1}\ndns:\n  <<: *b\n  extra: 1\n"
    root = Section.from_yaml_text(doc, file="x.yaml")
    dns = root.section("dns")
    assert dns.line == 2
    assert dns.line_of("extra") == 4
    assert dns.line_of("port") == 1                   # where the merged key is written


def test_a_duration_that_is_not_finite_is_refused_with_its_key():
    root = load("timeout: nan\nidle: inf\n")
    with pytest.raises(ConfigError, match="timeout: expected a duration"):
        root.take_duration("timeout")
    with pytest.raises(ConfigError, match="idle: expected a duration"):
        root.take_duration("idle")
