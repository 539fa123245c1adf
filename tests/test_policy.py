from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kuaimod_open.errors import PolicyError
from kuaimod_open.judge.policy import Decision, load_policy, parse_policy

REPO = Path(__file__).resolve().parent.parent
SHIPPED = (REPO / "prompts" / "policy.yaml").read_text(encoding="utf-8")

KUAIMOD_TAGS = [
    "正向",
    "违法犯罪",
    "涉政不当言行",
    "辱骂、引战、宣扬仇恨",
    "出售违禁品",
    "历史虚无主义",
    "色情低俗",
    "不实信息",
    "危害未成年人身心健康",
    "未成年不适当行为",
    "夸大商品功效",
    "引导私下交易",
    "虚假承诺福利",
    "炒作卖货",
    "未添加AI标识",
    "盗用抄袭作品",
]


def test_shipped_policy_has_the_kuaimod_taxonomy(policy):
    assert [c.tag for c in policy.categories] == KUAIMOD_TAGS
    assert policy.benign_category.tag == "正向"
    assert policy.benign_category.action is Decision.ALLOW
    assert {g.tag for g in policy.groups} == {
        "法律与社会安全",
        "内容质量与伦理",
        "商业行为与商品宣传",
        "知识产权与标识合规",
    }
    assert all(c.group for c in policy.violations)
    assert all(c.action is not Decision.ALLOW for c in policy.violations)


def test_every_dev_tag_maps_to_a_category(policy):
    dev = REPO.parent / "shared" / "data" / "kuaimod_dev.jsonl"
    if not dev.exists():
        pytest.skip("shared dev data not present")
    tags = {json.loads(line)["tag"] for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()}
    for tag in tags:
        assert policy.by_tag(tag).tag == tag


def test_digest_is_stable_and_changes_with_content(policy):
    assert policy.digest == load_policy(REPO / "prompts" / "policy.yaml").digest
    edited = parse_policy(SHIPPED.replace("Crude humour", "Crude jokes"))
    assert edited.digest != policy.digest
    assert len(policy.digest) == 16


def test_render_contains_every_category_and_action(policy):
    text = policy.render()
    for cat in policy.categories:
        assert f"[{cat.code}] {cat.tag}" in text
        assert cat.definition in text
    assert "action: block" in text and "## 商业行为与商品宣传" in text


def test_find_accepts_code_tag_and_name(policy):
    assert policy.find("PORN_VULGAR").tag == "色情低俗"
    assert policy.find("色情低俗").code == "PORN_VULGAR"
    assert policy.find("misinformation").code == "MISINFO"
    assert policy.find("nonsense") is None


def test_unknown_tag_is_a_clear_error(policy):
    with pytest.raises(PolicyError, match="'赌博' is not a tag"):
        policy.by_tag("赌博")


def test_adding_a_category_needs_no_code_change():
    data = yaml.safe_load(SHIPPED)
    data["categories"].append(
        {
            "code": "SELF_HARM",
            "tag": "自残自杀",
            "name": "Self-harm",
            "group": "QUALITY",
            "definition": "Shows or encourages self-harm.",
            "action": "review",
            "severity": "critical",
        }
    )
    policy = parse_policy(yaml.safe_dump(data, allow_unicode=True))
    assert policy.find("自残自杀").action is Decision.REVIEW
    assert "[SELF_HARM] 自残自杀" in policy.render()


def _broken(old: str, new: str, count: int = 1) -> str:
    assert old in SHIPPED, old
    return SHIPPED.replace(old, new, count)


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    pos = -1
    for _ in range(occurrence):
        pos = text.index(needle, pos + 1)
    return text[:pos].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "message", "line_needle"),
    [
        ("    severity: medium\n", "    severty: medium\n", "categories.3.severty: unknown key", "severty"),
        ("    action: block\n", "    action: ban\n", "categories.1.action: Input should be", "action: ban"),
        ("    severity: high\n", "    severity: extreme\n", "categories.1.severity", "severity: extreme"),
        ("code: HATE", "code: ILLEGAL", "duplicate code 'ILLEGAL'", "code: ILLEGAL\n    tag: 辱骂"),
        ("tag: 出售违禁品", "tag: 违法犯罪", "duplicate tag '违法犯罪'", "tag: 违法犯罪\n    name: Selling"),
        ("benign: BENIGN", "benign: SAFE", "benign class 'SAFE' is not one of the categories", "benign: SAFE"),
        ("    action: allow\n", "    action: review\n", "benign class must have action 'allow'", "code: BENIGN"),
        (
            "    group: LAW\n    definition: Shows",
            "    group: NOPE\n    definition: Shows",
            "group 'NOPE' is not defined",
            "code: ILLEGAL",
        ),
        ("code: MISINFO", "code: misinfo", "categories.7.code: String should match pattern", "code: misinfo"),
        (
            "    definition: Insults",
            "    definition: ''\n    x_definition: Insults",
            "categories.2.definition",
            "definition: ''",
        ),
    ],
)
def test_each_validation_error_names_file_line_and_field(old, new, message, line_needle):
    text = _broken(old, new)
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="my_policy.yaml")
    msg = str(info.value)
    assert "my_policy.yaml:" in msg
    assert message in msg
    assert f"my_policy.yaml:{_line_of(text, line_needle)}:" in msg


def test_non_benign_allow_is_rejected():
    text = _broken("    action: restrict\n", "    action: allow\n")
    with pytest.raises(PolicyError, match="only the benign class may have action 'allow'"):
        parse_policy(text)


def test_duplicate_yaml_key_is_reported_with_its_line():
    text = _broken('version: "1.1.0"\n', 'version: "1.1.0"\nversion: "2.0.0"\n')
    with pytest.raises(PolicyError, match=r"p.yaml:\d+: duplicate key 'version'") as info:
        parse_policy(text, source="p.yaml")
    line = _line_of(text, 'version: "2.0.0"')
    assert f"p.yaml:{line}:" in str(info.value)


def test_missing_required_top_level_key():
    text = "\n".join(line for line in SHIPPED.splitlines() if not line.startswith("name:"))
    with pytest.raises(PolicyError, match=r"name: Field required"):
        parse_policy(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("version: [1,\n", "not valid YAML"),
        ("=\n", "not valid YAML"),  # composes, but YAML's !!value tag cannot be constructed (found by hypothesis)
        ("- a\n- b\n", "must be a mapping"),
        ("version: 1\nname: x\nbenign: BENIGN\ncategories: []\n", "categories"),
    ],
)
def test_malformed_files(text, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(text, source="bad.yaml")


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(PolicyError, match="--policy"):
        load_policy(tmp_path / "nope.yaml")


def test_numeric_version_is_kept_as_text():
    assert parse_policy(_broken('version: "1.1.0"', "version: 2.1")).version == "2.1"


def test_strictest_decision_rank():
    assert max([Decision.RESTRICT, Decision.BLOCK, Decision.REVIEW], key=lambda d: d.rank) is Decision.BLOCK
    assert Decision.REVIEW.rank > Decision.RESTRICT.rank > Decision.ALLOW.rank
