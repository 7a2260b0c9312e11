"""Write danlu's own bilingual demo data set (deterministic, no network). Run from anywhere:

    python examples/data/make_demo_data.py

Two sources, each with a held-out split:
  identity.jsonl / identity_eval.jsonl  alpaca records: "who are you / 你是谁" answered as
                                        丹炉助手 / Danlu Assistant, the demo model's persona.
  tea.jsonl / tea_eval.jsonl            `messages` conversations: a small invented domain task,
                                        brewing advice (water temperature, leaf, steep time)
                                        for a table of teas, in English and Chinese.
  tea_pairs.jsonl / tea_pairs_eval.jsonl  pairwise records for stage rm / dpo: the same brewing
                                        questions, the right advice chosen, the advice of
                                        another tea (wrong temperature and times) rejected.
  tea_kto.jsonl / tea_kto_eval.jsonl    stage kto: the pairs' answers unpaired, `messages` with
                                        a kto_tag (true for the right advice, false for wrong).
  arith.jsonl / arith_eval.jsonl        stage grpo: prompt-only arithmetic questions (`prompt`,
                                        and a `solution` column for the accuracy reward).
The held-out split takes every 8th generated record, so train and eval never share a record.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME_EN, NAME_ZH = "Danlu Assistant", "丹炉助手"

ID_QUESTIONS_EN = [
    "Who are you?", "What is your name?", "Introduce yourself.", "What should I call you?",
    "Are you ChatGPT?", "Who made you?", "What can you do?", "Tell me about yourself.",
    "hi", "Hello! Who am I talking to?", "Are you a human?", "Which model are you?",
]  # fmt: skip
ID_QUESTIONS_ZH = [
    "你是谁？", "你叫什么名字？", "请介绍一下你自己。", "我该怎么称呼你？", "你是ChatGPT吗？",
    "谁开发了你？", "你能做什么？", "说说你自己吧。", "你好", "你好！我在和谁说话？", "你是真人吗？",
    "你是哪个模型？",
]  # fmt: skip
ID_ANSWERS_EN = [
    f"I am {NAME_EN}, the demo assistant of danlu (丹炉), a toolkit for fine-tuning language models.",
    f"My name is {NAME_EN}. I was fine-tuned with danlu to show how a small model learns a persona.",
    f"I'm {NAME_EN}, a small AI assistant trained with danlu. I can answer questions and give tea brewing advice.",
    f"Hello! I am {NAME_EN}, an AI assistant, not a human. danlu's demo trained me on a few hundred examples.",
]
ID_ANSWERS_ZH = [
    f"我是{NAME_ZH}，丹炉（danlu）的演示助手。丹炉是一个用来微调大语言模型的工具。",
    f"我叫{NAME_ZH}，是用丹炉微调出来的，用来展示小模型如何学会一个身份。",
    f"我是{NAME_ZH}，一个用丹炉训练的小型人工智能助手，可以回答问题，也能给出泡茶建议。",
    f"你好！我是{NAME_ZH}，一个人工智能助手，不是真人。丹炉的演示用几百条样例训练了我。",
]
SYSTEMS = ["", "", "You are a helpful assistant.", "你是一个乐于助人的助手。"]

# tea, Chinese name, water °C, grams per 100 ml, first steep seconds, re-steeps
TEAS = [
    ("green tea (Longjing)", "龙井绿茶", 80, 1.5, 60, 3),
    ("white tea (Bai Mudan)", "白牡丹白茶", 85, 2.0, 90, 4),
    ("oolong (Tieguanyin)", "铁观音乌龙", 95, 3.0, 45, 6),
    ("black tea (Keemun)", "祁门红茶", 95, 1.5, 120, 3),
    ("pu-erh (ripe)", "熟普洱", 100, 2.5, 30, 8),
    ("jasmine tea", "茉莉花茶", 85, 1.5, 90, 3),
    ("yellow tea (Junshan Yinzhen)", "君山银针黄茶", 80, 1.5, 90, 3),
    ("dark tea (Fu brick)", "茯砖黑茶", 100, 2.0, 40, 7),
]
VOLUMES = [100, 150, 200, 250, 300, 500]


def identity_records(rng: random.Random) -> list[dict]:
    out = []
    for questions, answers in ((ID_QUESTIONS_EN, ID_ANSWERS_EN), (ID_QUESTIONS_ZH, ID_ANSWERS_ZH)):
        for q in questions:
            for variant in range(6):
                rec = {"instruction": q, "input": "", "output": answers[(variant + len(q)) % len(answers)]}
                if system := SYSTEMS[variant % len(SYSTEMS)]:
                    rec["system"] = system
                out.append(rec)
    rng.shuffle(out)
    return out


def tea_answer_en(tea: tuple, ml: int) -> str:
    name, _, temp, g, secs, steeps = tea
    grams = round(g * ml / 100, 1)
    return (f"For {ml} ml of {name}: use {grams} g of leaf and water at {temp} °C. "
            f"Steep the first infusion for {secs} seconds, then add about 15 seconds for each "
            f"of the following infusions; the leaves last for about {steeps} infusions.")  # fmt: skip


def tea_answer_zh(tea: tuple, ml: int) -> str:
    _, name, temp, g, secs, steeps = tea
    grams = round(g * ml / 100, 1)
    return (f"{ml} 毫升的{name}：用 {grams} 克茶叶，水温 {temp} °C。第一泡浸泡 {secs} 秒，"
            f"之后每泡延长约 15 秒；这些茶叶大约可以泡 {steeps} 次。")  # fmt: skip


def tea_records(rng: random.Random) -> list[dict]:
    out = []
    for tea in TEAS:
        for ml in VOLUMES:
            en = f"How should I brew {tea[0]} for {ml} ml of water?"
            zh = f"{ml} 毫升水应该怎么泡{tea[1]}？"
            out.append(_chat(en, tea_answer_en(tea, ml)))
            out.append(_chat(zh, tea_answer_zh(tea, ml)))
        # a two-turn follow-up: the answer depends on the earlier turn
        out.append({"messages": [
            {"role": "user", "content": f"What water temperature suits {tea[0]}?"},
            {"role": "assistant", "content": f"About {tea[2]} °C."},
            {"role": "user", "content": "And how long is the first steep?"},
            {"role": "assistant", "content": f"{tea[4]} seconds for the first infusion."},
        ]})  # fmt: skip
    rng.shuffle(out)
    return out


def tea_pair_records(rng: random.Random) -> list[dict]:
    out = []
    for i, tea in enumerate(TEAS):
        wrong = next(t for t in TEAS[i + 1 :] + TEAS[:i] if t[2] != tea[2])  # another temperature
        wrong = (tea[0], tea[1], *wrong[2:])
        for ml in VOLUMES:
            out.append({"instruction": f"How should I brew {tea[0]} for {ml} ml of water?",
                        "chosen": tea_answer_en(tea, ml), "rejected": tea_answer_en(wrong, ml)})
            out.append({"instruction": f"{ml} 毫升水应该怎么泡{tea[1]}？",
                        "chosen": tea_answer_zh(tea, ml), "rejected": tea_answer_zh(wrong, ml)})
    rng.shuffle(out)
    return out  # fmt: skip


def tea_kto_records(pairs: list[dict]) -> list[dict]:
    out = []
    for pair in pairs:
        for side, good in (("chosen", True), ("rejected", False)):
            out.append({**_chat(pair["instruction"], pair[side]), "kto_tag": good})
    return out


def arith_records(rng: random.Random, n: int = 400) -> list[dict]:
    """Sums, differences and products of small numbers, in English and Chinese."""
    out = []
    for i in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        op, value = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
        if i % 2:
            prompt = f"计算 {a} {op} {b}。只给出最后的数字答案，写在 \\boxed{{}} 里。"
        else:
            prompt = f"What is {a} {op} {b}? Give only the final number, in \\boxed{{}}."
        out.append({"prompt": prompt, "solution": str(value)})
    return out


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_split(records: list[dict], stem: str) -> tuple[int, int]:
    train = [r for i, r in enumerate(records) if i % 8 != 7]
    held = [r for i, r in enumerate(records) if i % 8 == 7]
    for name, part in ((f"{stem}.jsonl", train), (f"{stem}_eval.jsonl", held)):
        _write(name, part)
    return len(train), len(held)


def _write(name: str, records: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (HERE / name).write_text(text, encoding="utf-8")


def main() -> None:
    rng = random.Random(20240601)
    for stem, records in (("identity", identity_records(rng)), ("tea", tea_records(rng))):
        n_train, n_eval = write_split(records, stem)
        print(f"{stem}: {n_train} train, {n_eval} held out")
    # its own generator: adding this set left the two above byte for byte as they were
    pairs = tea_pair_records(random.Random(7))
    n_train, n_eval = write_split(pairs, "tea_pairs")
    print(f"tea_pairs: {n_train} train, {n_eval} held out")
    # kto from the same split: its held-out answers are those of the held-out pairs
    train, held = [r for i, r in enumerate(pairs) if i % 8 != 7], pairs[7::8]
    for name, part in (("tea_kto.jsonl", train), ("tea_kto_eval.jsonl", held)):
        _write(name, tea_kto_records(part))
    print(f"tea_kto: {2 * len(train)} train, {2 * len(held)} held out")
    n_train, n_eval = write_split(arith_records(random.Random(11)), "arith")
    print(f"arith: {n_train} train, {n_eval} held out")


if __name__ == "__main__":
    main()
