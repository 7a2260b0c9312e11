"""grpo's reward functions: answer extraction, the built-ins, and user functions loaded from a
file or a module, with the exact one-line errors of each way they can be wrong."""

from __future__ import annotations

import pytest

from danlu.train.rewards import (
    accuracy,
    extract_answer,
    length,
    load_rewards,
    same_answer,
    think_format,
)
from danlu.utils.errors import UsageError


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so the total is \\boxed{42}.", "42"),
        ("first \\boxed{1}, no: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("3 apples and 4 pears make 7 fruits", "7"),
        ("the answer is -12.5", "-12.5"),
        ("<think>maybe 5? no, 6</think> It is 8.", "8"),
        ("1,000 people", "1,000"),
        ("Paris", "Paris"),
        ("", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("1,000", "1000", True), ("0.5", "1/2", True), ("72", "72.0", True), ("7", "8", False),
     ("Paris", " paris ", True), ("Paris", "Rome", False), (None, "1", False)],
)  # fmt: skip
def test_same_answer(a, b, same):
    assert same_answer(a, b) is same


def test_accuracy_compares_with_the_solution_column():
    got = accuracy(
        ["q"] * 3, ["\\boxed{5}", "it is 6", "#### 5"], solution=["5", "5", "\\boxed{5}"]
    )
    assert got == [1.0, 0.0, 1.0]


def test_accuracy_without_a_solution_column_says_how_to_name_one():
    with pytest.raises(UsageError) as e:
        accuracy(["q"], ["5"])
    assert str(e.value) == (
        "reward_funcs: accuracy compares answers with a 'solution' column, and the data has "
        "none (columns: {solution: YOUR_COLUMN} renames yours)"
    )


def test_think_format():
    got = think_format([""] * 5, [
        "<think>add them</think> 5", "add them</think>\n5", "5", "<think>a</think>",
        "<think>a</think> b </think> c",
    ])  # fmt: skip
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_length_prefers_short_answers():
    assert length([""] * 2, ["a", "b"], completion_lengths=[8, 32], max_length=32) == [-0.25, -1.0]


def _write(tmp_path, body: str, name: str = "rewards.py"):
    path = tmp_path / name
    path.write_text(body)
    return path


def test_a_function_from_a_file_gets_prompts_completions_and_columns(tmp_path):
    path = _write(tmp_path, "def f(prompts, completions, solution, **kw):\n"
                            "    return [float(c == s) for c, s in zip(completions, solution)]\n")  # fmt: skip
    (reward,) = load_rewards([f"python:{path}:f"], 16)
    assert reward(["p", "p"], ["1", "2"], solution=["1", "1"]) == [1.0, 0.0]
    assert reward.where == f"{path}:1"


def test_a_function_from_a_module(tmp_path, monkeypatch):
    _write(
        tmp_path, "def score(prompts, completions, **kw):\n    return [None, 2]\n", "myrewards.py"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (reward,) = load_rewards(["python:myrewards:score"], 16)
    got = reward(["p", "p"], ["a", "b"])
    assert got[0] != got[0] and got[1] == 2.0  # None is NaN: left out of the sum


def test_wrong_number_of_rewards_names_the_function_and_its_line(tmp_path):
    path = _write(tmp_path, "import math\n\ndef f(prompts, completions, **kw):\n    return [1.0]\n")
    (reward,) = load_rewards([f"python:{path}:f"], 16)
    with pytest.raises(UsageError) as e:
        reward(["p"] * 4, ["a"] * 4)
    assert str(e.value) == (
        f"reward_funcs: python:{path}:f ({path}:3) returned 1 rewards for 4 completions; it "
        "must return one per completion"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("python:{d}/missing.py:f", "reward_funcs: {d}/missing.py: no such file"),
        ("python:{d}/broken.py:f", "reward_funcs: {d}/broken.py: cannot import it: SyntaxError at line 1: "),
        ("python:{d}/raises.py:f", "reward_funcs: {d}/raises.py: cannot import it: ModuleNotFoundError: No module named 'nonesuch_pkg'"),
        ("python:{d}/ok.py:nope", "reward_funcs: {d}/ok.py has no function 'nope'"),
        ("python:nonesuch_pkg.mod:f", "reward_funcs: module nonesuch_pkg.mod: cannot import it: ModuleNotFoundError: No module named 'nonesuch_pkg'"),
        ("python:f", "reward_funcs: 'python:f' must be python:FILE.py:FUNCTION or python:MODULE:FUNCTION"),
        ("bleu", "reward_funcs: 'bleu' is not a reward function: use accuracy, format, length, python:FILE.py:FUNCTION, python:MODULE:FUNCTION or rm:PATH"),
    ],
)  # fmt: skip
def test_reward_functions_that_cannot_load(tmp_path, spec, message):
    _write(tmp_path, "def f(:\n", "broken.py")
    _write(tmp_path, "import nonesuch_pkg\n", "raises.py")
    _write(tmp_path, "def f(prompts, completions, **kw):\n    return []\n", "ok.py")
    with pytest.raises(UsageError) as e:
        load_rewards([spec.format(d=tmp_path)], 16)
    assert str(e.value).startswith(message.format(d=tmp_path))
    assert "\n" not in str(e.value)
