"""The VLM's own confidence in its category, from the token probabilities of its answer.

A model's self-reported ``"confidence": 0.9`` is a number it wrote, not a measurement. When the
backend exposes token log-probabilities (``hf`` output scores, ``openai`` logprobs; both need
``GenerateConfig(logprobs=True)``), we can read how probable the model found the category it wrote:
the product of the probabilities of the tokens that spell the category value in its final JSON
verdict, i.e. ``P(category | prompt, reasoning)`` under the model.

Such probabilities rank verdicts well but are usually over-confident after a long chain of
thought; to turn them into calibrated probabilities of being right, fit
:func:`kuaimod_open.calibration.fit_calibrator` on (token confidence, verdict was correct) pairs
from a labelled run, and apply it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from .verdict import ParseStatus, Verdict

_CATEGORY_VALUE = re.compile(r'"(?:category|tag|label)"\s*:\s*"([^"]{1,80})"')


def category_confidence(
    token_logprobs: Sequence[tuple[str, float]] | None, raw_text: str, verdict: Verdict
) -> float | None:
    """The model's probability of the category value it wrote in its last JSON verdict, or None.

    None when there are no token log-probabilities, when the verdict was not parsed from JSON
    (``status != ok``), or when the category value cannot be located in the tokens.
    """
    if not token_logprobs or verdict.status is not ParseStatus.OK or verdict.category is None:
        return None
    pieces = [text for text, _ in token_logprobs]
    joined = "".join(pieces)
    # Decoding tokens one by one can differ from the decoded answer (split multi-byte characters):
    # search the token text itself, and only trust it if the answer says the same thing.
    wanted = {verdict.category.lower()} | ({verdict.tag.lower()} if verdict.tag else set())
    match = None
    for candidate in _CATEGORY_VALUE.finditer(joined):
        if candidate.group(1).strip().lower() in wanted:
            match = candidate
    if match is None or not any(m.group(1).strip().lower() in wanted for m in _CATEGORY_VALUE.finditer(raw_text)):
        return None
    start, end = match.span(1)
    total, offset, used = 0.0, 0, 0
    for text, logprob in token_logprobs:
        token_start, offset = offset, offset + len(text)
        if token_start < end and offset > start:  # the token overlaps the category value
            total += logprob
            used += 1
    if used == 0 or not math.isfinite(total):
        return None
    return round(math.exp(min(0.0, total)), 6)


__all__ = ["category_confidence"]
