"""Property tests (hypothesis) for ids, paths and URLs: keys, artifact names, canonical ids, timelines, URL checks."""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kuaimod_open.ingest.fetch import FetchError, FetchPolicy, check_url
from kuaimod_open.ingest.frames import frames_folder
from kuaimod_open.ingest.keys import key_for, key_name, safe_suffix, stored_name, video_inputs
from kuaimod_open.ingest.sample import VIDEO_EXTENSIONS
from kuaimod_open.ingest.timeline import Claims, plan_frames

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("KUAIMOD_CI")),
)
NAME = re.compile(r"[A-Za-z0-9_-]{1,40}-[0-9a-f]{32}")
ids = st.text(min_size=1, max_size=60)
contents = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@SETTINGS
@given(ids, ids, contents)
@example("clip/1", "clip_1", "0" * 64)
@example("..", ".", "0" * 64)
@example("a/../b", "a_.._b", "0" * 64)
def test_distinct_ids_get_distinct_safe_names(a, b, content):
    key_a, key_b = key_for(a, content), key_for(b, content)
    for key in (key_a, key_b):
        assert NAME.fullmatch(key.name), key.name
        root = Path("/srv/work/frames")
        folder = frames_folder(root, key, 8, 640, "uniform")
        assert folder.parent.parent == root and os.path.normpath(folder) == str(folder)
    if a != b:
        assert key_a.digest != key_b.digest and key_a.name != key_b.name


@SETTINGS
@given(ids, contents, contents)
def test_the_same_id_with_other_content_gets_another_key(sid, one, other):
    if one != other:
        assert key_for(sid, one).digest != key_for(sid, other).digest
    assert key_name(sid, key_for(sid, one).digest) == key_for(sid, one).name


@SETTINGS
@given(st.text(max_size=30), contents)
@example("x.mp4\n", "0" * 64)
@example("../../x.mp4", "0" * 64)
@example("a.mp4\x00.sh", "0" * 64)
def test_stored_names_are_plain_file_names(name, content):
    suffix = safe_suffix(name)
    assert suffix == "" or re.fullmatch(r"\.[a-z0-9]{1,7}", suffix)
    stored = stored_name(content, name)
    assert "/" not in stored and "\x00" not in stored and stored.startswith(content)


segment = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"), min_size=1)
segment = segment.filter(lambda s: s not in (".", "..") and len(s.encode()) < 60 and s.strip() == s)
tree = st.lists(
    st.tuples(st.lists(segment, min_size=0, max_size=3), segment, st.sampled_from([".mp4", ".MOV", ".mkv", ".webm"])),
    min_size=1,
    max_size=8,
)


@settings(SETTINGS, max_examples=60)  # each example writes a folder tree
@given(tree)
@example([(["0", "0"], "0", ".mp4"), (["0", "0"], "0", ".MOV")])  # found by this test: the folder was dropped
def test_canonical_ids_do_not_depend_on_how_the_folder_is_spelled(files):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "clips"
        for folders, stem, suffix in files:
            path = root.joinpath(*folders, stem + suffix)
            if path.parent.exists() and not path.parent.is_dir() or path.is_dir():
                continue
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"v")
            except OSError:  # a name the file system refuses (e.g. a file where a folder is needed)
                continue
        if not any(p.is_file() for p in root.rglob("*")):
            return
        absolute = video_inputs([root], VIDEO_EXTENSIONS)
        cwd = os.getcwd()
        try:
            os.chdir(base)
            relative = video_inputs([Path("clips")], VIDEO_EXTENSIONS)
            dotted = video_inputs([Path(".") / "clips" / ".." / "clips"], VIDEO_EXTENSIONS)
        finally:
            os.chdir(cwd)
        got = [sid for _, sid in absolute]
        assert got == [sid for _, sid in relative] == [sid for _, sid in dotted]
        assert len(set(got)) == len(got)
        for path, sid in absolute:
            # The id is the path under the folder (suffix dropped unless two files differ only by it).
            relative_path = path.relative_to(root).as_posix()
            assert sid in (relative_path, relative_path.rsplit(".", 1)[0])


finite_times = st.lists(st.floats(min_value=-1e5, max_value=1e6, allow_nan=False), min_size=1, max_size=60)
any_times = st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=60)
claims = st.builds(
    Claims,
    container_s=st.none() | st.floats(min_value=-10, max_value=1e6) | st.just(math.nan),
    stream_s=st.none() | st.floats(min_value=-10, max_value=1e6) | st.just(math.inf),
)


@SETTINGS
@given(st.one_of(finite_times.map(sorted), finite_times, any_times), claims, st.integers(min_value=0, max_value=20))
@example([-10800.0, -7200.0, -3600.0, 0.0, 3600.0, 7200.0], Claims(32400.0, 32400.0), 8)
@example([0.0] * 100 + [1.0 + i for i in range(9)], Claims(36000.0, None), 8)
def test_planned_timestamps_are_always_possible(times, claim, k):
    plan = plan_frames(times, claim, k)
    n = len(times)
    assert plan.indices == sorted(set(plan.indices)) and all(0 <= i < n for i in plan.indices)
    assert len(plan.timestamps) == len(plan.indices) and plan.indices
    limit = claim.longest
    for index, stamp in zip(plan.indices, plan.timestamps, strict=True):
        if stamp is None:
            continue
        assert plan.trusted and stamp >= 0 and math.isfinite(stamp)
        assert times[index] >= -0.05  # never a frame an edit list cuts
        if limit is not None:
            assert stamp <= limit * 1.05 + 2.0 + 1e-6
    if plan.trusted:
        shown = sum(1 for t in times if t >= -0.05)
        assert len(plan.indices) == min(k + 1, shown)


PREFIX_POLICY = FetchPolicy(prefixes=("https://cdn.example.com/videos/",))
url_piece = st.sampled_from(
    [
        "videos",
        "secret",
        "..",
        ".",
        "%2e",
        "%2E%2e",
        "%2f",
        "%5c",
        "\\",
        "a.mp4",
        "",
        "%00",
        "%252e",
        "x y",
        "é",
        "?q=1",
    ]
)
url_text = st.builds(
    lambda scheme, host, parts: f"{scheme}://{host}/" + "/".join(parts),
    st.sampled_from(["https", "http", "HTTPS", "file", "ftp", "javascript"]),
    st.sampled_from(["cdn.example.com", "CDN.EXAMPLE.COM.", "cdn.example.com:443", "cdn.example.com.evil.net",
                     "cdn.example.com@evil.net", "evil.net", "127.0.0.1", "[::1]", "cdn.example.com:8443"]),
    st.lists(url_piece, max_size=6),
)  # fmt: skip


@SETTINGS
@given(st.one_of(url_text, st.text(max_size=80)))
@example("https://cdn.example.com/videos/../secret/x.mp4")
@example("https://cdn.example.com/videos/%2e%2e/secret/x.mp4")
def test_an_allowed_url_is_always_under_the_prefix_with_no_dot_segment(url):
    try:
        checked = check_url(url, PREFIX_POLICY)
    except FetchError as exc:
        assert exc.reason == "refused"
        return
    parts = urlsplit(checked)
    assert parts.scheme == "https" and parts.hostname == "cdn.example.com" and parts.port in (None, 443)
    assert parts.path.startswith("/videos/") and parts.username is None
    decoded = unquote(parts.path)
    assert not {".", ".."} & set(decoded.replace("\\", "/").split("/")) and "\x00" not in decoded
    assert check_url(checked, PREFIX_POLICY) == checked  # normalising is idempotent
