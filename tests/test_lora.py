"""``update lora``: Tag2CoT/CoT2Tag data, SFT + DPO with trl/peft on the tiny Qwen2-VL, gate, watermark."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.errors import PromptError
from kuaimod_open.ingest.sample import Frame, Sample
from kuaimod_open.judge.backends.base import GenerateConfig, Request
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig
from kuaimod_open.judge.policy import load_policy
from kuaimod_open.judge.prompt import build_messages, load_template
from kuaimod_open.judge.verdict import Provenance, parse_verdict
from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback, record_sample, record_verdict
from kuaimod_open.loop.gate import decisions, is_holdout
from kuaimod_open.loop.registry import Status, active, history
from kuaimod_open.loop.store import Store
from kuaimod_open.loop.updaters.tag2cot import load_tag2cot_template, parse_tag2cot_template, tag2cot_messages

pytest.importorskip("sqlalchemy")
PROV = Provenance(model="deployed", policy_version="t1", policy_digest="d", prompt_digest="p", package_version="0")

# A three-category policy keeps prompts at ~2k tokens so that training on 2 CPU cores takes seconds;
# the shipped policy renders to ~8k tokens.
SMALL_POLICY = """\
version: "t1"
name: test policy
benign: BENIGN
min_confidence: 0.5
groups:
  - {code: LAW, tag: 法律与社会安全, name: Law}
categories:
  - {code: BENIGN, tag: 正向, name: Benign, definition: Breaks no rule., action: allow, severity: none}
  - {code: PORN_VULGAR, tag: 色情低俗, name: Vulgar, group: LAW, definition: Sexual or vulgar content.,
     action: block, severity: high}
  - {code: PRIVATE_DEAL, tag: 引导私下交易, name: Private deal, group: LAW,
     definition: Steers buyers off the platform., action: block, severity: medium}
"""


def test_tag2cot_template_is_validated(tmp_path):
    shipped = load_tag2cot_template()
    assert "$code" in shipped.text and len(shipped.digest) == 16
    with pytest.raises(PromptError, match=r"unknown placeholder\(s\) \$label"):
        parse_tag2cot_template("The answer is $label", source="t.md")
    with pytest.raises(PromptError, match=r"required placeholder\(s\) missing: \$code"):
        parse_tag2cot_template("Write about $tag", source="t.md")
    with pytest.raises(PromptError, match="Cannot read Tag2CoT template"):
        load_tag2cot_template(tmp_path / "missing.md")


def test_teacher_note_goes_to_the_teacher_only(policy, template):
    sample = Sample(id="s", title="加我V信", ocr="私聊")
    messages = build_messages(sample, policy, template)
    note = tag2cot_messages(messages, policy.category("PRIVATE_DEAL"), "asks for WeChat </untrusted>", shipped())
    assert note[:-1] == messages[:-1] and note[-1].parts[: len(messages[-1].parts)] == messages[-1].parts
    added = note[-1].parts[-1]
    assert "PRIVATE_DEAL" in added and "引导私下交易" in added and "‹/untrusted" in added
    assert "PRIVATE_DEAL" not in messages[-1].text  # the student prompt never names the answer


def shipped():
    return load_tag2cot_template()


def test_lora_modules_import_no_training_library():
    code = (
        "import sys, kuaimod_open.cli, kuaimod_open.loop.updaters.lora; "
        "print(','.join(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- end to end


def _ids(holdout: bool, n: int) -> list[str]:
    return [f"case-{i}" for i in range(200) if is_holdout(f"case-{i}") == holdout][:n]


@pytest.fixture
def loop(tmp_path, frame_images):
    """A store with reviewer decisions that contradict the deployed model's verdicts."""
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(SMALL_POLICY, encoding="utf-8")
    policy = load_policy(policy_path)
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    train_ids, held_ids = _ids(False, 4), _ids(True, 1)
    frames = tuple(Frame(path=p, timestamp=float(i)) for i, p in enumerate(frame_images[:2]))
    cases = [  # (sample, the model's answer, the reviewer's label)
        (Sample(id=train_ids[0], title="加我V信 便宜出", ocr="私聊价格"), "BENIGN", "PRIVATE_DEAL"),
        (Sample(id=train_ids[1], title="深夜福利", asr="低俗段子"), "BENIGN", "PORN_VULGAR"),
        (Sample(id=train_ids[2], title="二手手机", ocr="VX: abc123", frames=frames), "BENIGN", "PRIVATE_DEAL"),
        (Sample(id=train_ids[3], title="红烧肉教程"), "BENIGN", "BENIGN"),
        (Sample(id=held_ids[0], title="加我微信", ocr="私下交易"), "BENIGN", "PRIVATE_DEAL"),
    ]
    for sample, answer, label in cases:
        record_sample(store, sample)
        record_verdict(store, parse_verdict(verdict_json(answer), policy, sample, PROV))
        event = FeedbackEvent(sample_id=sample.id, kind="reviewer_decision", category=label, author="alice")
        add_feedback(store, event.model_copy(update={"reason": f"reviewed as {label}"}), policy)

    labels = {s.id: label for s, _, label in cases}
    # The teacher follows the note except for the second case, where its chain argues for BENIGN.
    answers = {sid: verdict_json(label) for sid, label in labels.items()}
    answers[train_ids[1]] = verdict_json("BENIGN")
    teacher = ScriptedBackend(default=lambda r: answers[r.sample_id], model_id="teacher-scripted")
    benchmark = [
        Sample(id="bench-1", title="风景", label="正向"),
        Sample(id="bench-2", title="加V", label="引导私下交易"),
    ]
    return store, policy, teacher, train_ids, held_ids, benchmark


@pytest.fixture(params=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def student(request, tiny_model, tmp_path_factory):
    """The tiny student checkpoint of each Qwen-VL family (LoRA targets must exist in all three)."""
    if request.param == "qwen2_vl":
        return tiny_model
    from kuaimod_open.judge.backends.tiny import build_tiny_qwen_vl

    return build_tiny_qwen_vl(tmp_path_factory.mktemp(request.param), arch=request.param)


@pytest.mark.hf
@pytest.mark.slow
def test_update_lora_end_to_end_on_the_tiny_model(loop, student, tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    tiny_model = student

    from kuaimod_open.judge.backends.hf import HFBackend
    from kuaimod_open.loop.updaters.lora import LoraTrainConfig, read_meta, update_lora

    store, policy, teacher, train_ids, held_ids, benchmark = loop
    template = load_template()
    train = LoraTrainConfig(epochs=1, learning_rate=5e-3, rank=4, batch_size=2, grad_accum=1, device="cpu")
    run = dict(
        policy=policy,
        template=template,
        base_model=str(tiny_model),
        teacher=teacher,
        out_dir=tmp_path / "adapters",
        train_config=train,
        moderation=ModerationConfig(generate=GenerateConfig(max_new_tokens=8, batch_size=4)),
        benchmark=benchmark,
    )
    result = update_lora(store, **run)

    # Tag2CoT saw the training split only, with the note; CoT2Tag dropped the chain that argued for BENIGN.
    asked = {r.sample_id for r in teacher.history}
    assert asked == set(train_ids) and held_ids[0] not in asked
    assert all("reviewed as" in r.messages[-1].text for r in teacher.history)
    counts = result.counts
    assert (counts.cases, counts.kept, counts.dropped_wrong_label, counts.dropped) == (4, 3, 1, 1)
    assert counts.pairs == 2  # cases 0 and 2: the model was wrong and the teacher's chain was kept

    # Trained: every LoRA tensor moved in SFT, DPO moved them again; lora_B starts at zero in peft.
    meta = read_meta(result.adapter.path)
    trained = meta.result
    assert trained.sft_examples == 3 and trained.dpo_pairs == 2
    assert trained.lora_tensors > 0 and trained.changed_by_sft == trained.lora_tensors and trained.changed_by_dpo > 0
    assert len(trained.sft_losses) == 2 and len(trained.dpo_losses) == 1
    assert all(math.isfinite(x) for x in trained.sft_losses + trained.dpo_losses)
    adapter_dir = Path(result.adapter.path)
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)
    assert not any(".ref." in name for name in weights) and not (adapter_dir / "ref").exists()
    saved = json.loads((adapter_dir / "meta.json").read_text(encoding="utf-8"))
    assert saved["base_model"] == str(tiny_model) and saved["teacher_model"] == "teacher-scripted"
    assert saved["policy_version"] == "t1" and saved["counts"]["kept"] == 3 and saved["training"]["rank"] == 4

    # The adapter reloads through the production backend, changes the model, and generates.
    base = HFBackend(str(tiny_model), device="cpu")
    tuned = HFBackend(str(tiny_model), adapter=str(adapter_dir), device="cpu")
    request = Request("x", build_messages(Sample(id="x", title="hello"), policy, template))
    out = tuned.generate([request], GenerateConfig(max_new_tokens=6))
    assert out[0].error is None and out[0].output_tokens > 0
    ids = base.processor(text=["<|im_start|>user\nhello<|im_end|>"], return_tensors="pt")
    assert not base.model(**ids).logits.allclose(tuned.model(**ids).logits)

    # Random weights answer garbage before and after: the gate rejects, and says so in the store.
    assert result.status == "rejected"
    gate = decisions(store, "adapter")
    assert len(gate) == 1 and gate[0].passed is False and gate[0].n == 3  # 1 held-out case + 2 benchmark rows
    assert gate[0].baseline == "base (no adapter)" and gate[0].candidate == meta.name
    assert [a.status for a in history(store, "adapter")] == [Status.REJECTED] and active(store, "adapter") is None
    assert (adapter_dir / "gate.json").is_file()

    # Watermark = the last decision consumed; a cron re-run with nothing new does nothing.
    assert store.watermark("lora") == result.watermark == 5
    again = update_lora(store, **run)
    assert again.status == "nothing_new" and "nothing to do" in again.message
    assert len(teacher.history) == 4 and len(history(store, "adapter")) == 1


@pytest.mark.hf
def test_cli_update_lora_without_usable_chains_advances_the_watermark(loop, tiny_model, tmp_path):
    pytest.importorskip("trl")
    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    store, *_ = loop
    policy = tmp_path / "policy.yaml"
    args = ["update", "lora", "--db", store.url, "--policy", str(policy), "--model", str(tiny_model)]
    # The random tiny model as teacher writes garbage: every chain fails CoT2Tag and nothing is trained.
    args += ["--teacher-backend", "hf", "--teacher-model", str(tiny_model), "--device", "cpu"]
    args += ["--out", str(tmp_path / "adapters"), "--max-new-tokens", "4", "--epochs", "1"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "4 training cases" in first.output and "no adapter trained" in first.output
    assert store.watermark("lora") == 5 and history(store, "adapter") == []
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and "nothing to do" in second.output


# --------------------------------------------------------------------------- issue #18: length, max_length, versions


def test_training_length_is_in_epochs_with_a_step_cap():
    from kuaimod_open.loop.updaters.lora_train import LoraTrainConfig, plan_steps

    config = LoraTrainConfig(batch_size=1, grad_accum=8)  # the README recipe's batch
    assert config.epochs == 2.0 and config.max_steps == 1000  # the documented defaults
    # ~30 pairs: 4 steps an epoch, 8 steps (the old fixed 200 steps were ~53 epochs)
    assert plan_steps(30, config.epochs, config) == (8, 2.0)
    # thousands of chains are all seen, up to the safety cap
    assert plan_steps(3000, 2.0, config) == (750, 2.0)
    assert plan_steps(5000, 2.0, config) == (1000, 1.6)
    assert plan_steps(3, 1.0, LoraTrainConfig(batch_size=2, grad_accum=1)) == (2, 1.0)  # a short last batch counts
    assert plan_steps(0, 2.0, config) == (0, 0.0)


def test_lora_cli_takes_epochs_not_steps():
    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    help_text = CliRunner().invoke(cli, ["update", "lora", "--help"]).output
    assert "--epochs" in help_text and "--max-steps" in help_text and "--steps " not in help_text


def test_version_floors_are_the_tested_versions():
    import tomllib
    from importlib.metadata import version

    from packaging.version import Version

    from kuaimod_open.errors import ConfigError
    from kuaimod_open.loop.updaters.lora_train import TESTED_VERSIONS, check_versions

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    floors = dict(spec.split(">=") for spec in pyproject["project"]["optional-dependencies"]["train"])
    for name, tested in TESTED_VERSIONS.items():
        assert Version(floors[name]) == Version(tested), f"pyproject floor of {name} is not the tested version"
        assert Version(version(name)) >= Version(tested)
    check_versions()  # what is installed here passes
    with pytest.raises(ConfigError, match=r"trl 0\.12\.0 is installed.*trl>=1\.16"):
        check_versions({"trl": "0.12.0"})


@pytest.mark.hf
def test_max_length_skips_whole_examples_and_never_cuts_images_or_answers(tiny_model, frame_images, tmp_path):
    # Two chains with the same text; one also has two frames, whose image tokens take it past max_length.
    # Truncating after prompt and answer are joined would cut the answer (or the image placeholders); the
    # example is skipped and counted instead.
    pytest.importorskip("trl")
    import transformers

    from kuaimod_open.errors import ConfigError
    from kuaimod_open.loop.updaters.lora_train import LoraTrainConfig, _conversation, _token_length, train_lora
    from kuaimod_open.loop.updaters.tag2cot import Case, Chain

    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(SMALL_POLICY, encoding="utf-8")
    policy, template = load_policy(policy_path), load_template()
    frames = tuple(Frame(path=p, timestamp=float(i)) for i, p in enumerate(frame_images[:2]))
    answer = verdict_json("PRIVATE_DEAL")
    chains = []
    for sid, sample_frames in (("text", ()), ("frames", frames)):
        sample = Sample(id=sid, title="加我V信 便宜出", frames=sample_frames)
        case = Case(sample=sample, code="PRIVATE_DEAL", reason="r", feedback_id=1)
        chains.append(Chain(case=case, messages=build_messages(sample, policy, template), answer=answer))

    processor = transformers.AutoProcessor.from_pretrained(tiny_model)
    config = LoraTrainConfig(epochs=1, rank=2, batch_size=1, grad_accum=1, device="cpu")
    from qwen_vl_utils import fetch_image

    def load(path):
        element = {"image": str(path), "min_pixels": config.min_pixels, "max_pixels": config.max_pixels}
        return fetch_image(element, image_patch_size=14)

    lengths = [_token_length(processor, p + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}], i)
               for p, i in (_conversation(c.messages, load) for c in chains)]  # fmt: skip
    assert lengths[1] > lengths[0] + 100  # the frames' image tokens are counted
    limit = (lengths[0] + lengths[1]) // 2
    result = train_lora(
        str(tiny_model), chains, [], tmp_path / "adapter", config.model_copy(update={"max_length": limit})
    )
    assert (result.sft_examples, result.skipped_too_long, result.longest_tokens) == (1, 1, lengths[1])
    assert result.sft_steps == 1 and len(result.sft_losses) == 1
    with pytest.raises(ConfigError, match="longer than --max-length"):
        train_lora(str(tiny_model), chains, [], tmp_path / "a2", config.model_copy(update={"max_length": 64}))
