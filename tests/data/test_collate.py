"""Golden batches: padding by position, pad == EOS id, multiples of 8, pairs."""

from __future__ import annotations

from danlu.data.collate import Collator, PairCollator


def test_pads_to_longest_and_masks_padding_by_position():
    # pad id 2 == EOS id 2 (as in SmolLM2): the real, trained EOS stays trained.
    features = [{"input_ids": [1, 5, 6, 2], "labels": [-100, -100, 6, 2]},
                {"input_ids": [1, 7], "labels": [-100, 7]}]  # fmt: skip
    batch = Collator(pad_id=2)(features)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 2], [1, 7, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 6, 2], [-100, 7, -100, -100]]


def test_pad_to_multiple_of_8():
    batch = Collator(pad_id=0, pad_to_multiple_of=8)(
        [{"input_ids": [3, 4, 5], "labels": [-100, 4, 5]}]
    )
    assert batch["input_ids"].tolist() == [[3, 4, 5, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 4, 5, -100, -100, -100, -100, -100]]
    exact = Collator(pad_id=0, pad_to_multiple_of=8)(
        [{"input_ids": list(range(8)), "labels": list(range(8))}]
    )
    assert exact["input_ids"].shape == (1, 8)


def test_pairs_chosen_rows_first():
    features = [
        {"chosen_input_ids": [1, 2, 3], "chosen_labels": [-100, 2, 3], "rejected_input_ids": [1, 9], "rejected_labels": [-100, 9]},
        {"chosen_input_ids": [1, 4], "chosen_labels": [-100, 4], "rejected_input_ids": [1, 8, 8], "rejected_labels": [-100, 8, 8]},
    ]  # fmt: skip
    batch = PairCollator(pad_id=0)(features)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [1, 4, 0], [1, 9, 0], [1, 8, 8]]
    assert batch["labels"].tolist() == [
        [-100, 2, 3],
        [-100, 4, -100],
        [-100, 9, -100],
        [-100, 8, 8],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 0], [1, 1, 1]]


def test_pairs_carry_precomputed_reference_logps():
    features = [
        {"chosen_input_ids": [1, 2], "chosen_labels": [-100, 2], "rejected_input_ids": [1, 3],
         "rejected_labels": [-100, 3], "ref_chosen_logps": -1.5, "ref_rejected_logps": -2.0},
        {"chosen_input_ids": [1], "chosen_labels": [1], "rejected_input_ids": [4], "rejected_labels": [4],
         "ref_chosen_logps": -0.5, "ref_rejected_logps": -3.0},
    ]  # fmt: skip
    batch = PairCollator(pad_id=0)(features)
    assert batch["ref_chosen_logps"].tolist() == [-1.5, -0.5]
    assert batch["ref_rejected_logps"].tolist() == [-2.0, -3.0]
