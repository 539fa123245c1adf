"""Shared helpers for tests (plain functions, not fixtures)."""

from __future__ import annotations

import json


def verdict_json(category: str, confidence: float = 0.9, **extra: object) -> str:
    """A realistic model answer: reasoning, then a fenced JSON verdict."""
    body = {
        "category": category,
        "other_categories": [],
        "confidence": confidence,
        "evidence": {"frames": [1], "text": []},
        "summary": "test",
    }
    body.update(extra)
    return (
        "### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n"
        f"```json\n{json.dumps(body, ensure_ascii=False)}\n```"
    )
