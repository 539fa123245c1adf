"""Synthetic Chinese benchmark rows for the router and cascade tests (generated, never real data)."""

from __future__ import annotations

import json
import random
from pathlib import Path

BENIGN = [
    ("今天做红烧肉 #美食教程", "先放糖炒糖色。再放五花肉", "大家好今天教大家做红烧肉"),
    ("周末去爬山 #旅行日记", "山顶风景真好。记录生活", "我们终于爬到山顶了"),
    ("我家小猫太可爱了 #萌宠", "小猫睡觉。打呼噜", "你看它睡得多香"),
    ("早餐吃什么 #家常菜", "煎鸡蛋。小米粥", "早上简单做个早餐"),
    ("孩子第一次学骑车 #亲子", "加油。慢慢来", "宝贝不要怕妈妈扶着你"),
]
VIOLATIONS = [
    ("引导私下交易", "低价出手 私聊", "加微信详聊。VX 123456。私下交易更便宜", "想要的加我微信私下转账"),
    ("色情低俗", "深夜福利 #性感", "性感美女。福利视频", "想看更多私密内容点主页"),
    ("辱骂、引战、宣扬仇恨", "这些人都是垃圾", "滚出去。垃圾东西", "他妈的这帮人都该死"),
]


def synthetic_rows(n: int = 40, seed: int = 0) -> list[dict[str, object]]:
    """``n`` KuaiMod-format rows: about half benign, the rest spread over three violation tags."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        noise = "".join(rng.choice("的了是在有我他这个们中来上") for _ in range(4))
        if i % 2 == 0:
            title, ocr, asr = BENIGN[(i // 2) % len(BENIGN)]
            tag = "正向"
        else:
            tag, title, ocr, asr = VIOLATIONS[(i // 2) % len(VIOLATIONS)]
        rows.append(
            {
                "pid": f"s{i:03d}",
                "tag": tag,
                "title": f"{title} {noise}",
                "OCR": f"{ocr}|{ocr}|{noise}",  # OCR repeats across frames, as in the benchmark
                "ASR": asr if i % 7 else "null",  # the benchmark writes missing fields as "null"
                "images": [],
            }
        )
    return rows


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write rows as JSONL and return the path."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
