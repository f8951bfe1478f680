"""The objectives on the tiny GPT-2: log-probs, the reference with the adapter disabled, DPO and
KTO worked out by hand from those log-probs, and a 👎-only data set that trains."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bot.core.adapter_io import attach_adapter, parse_adapter
from trainer.dataset import IGNORE_INDEX, Example
from trainer.evaluate import collate, objective_loss, summed_loss
from trainer.fit import FitConfig, FitParams, FitRun, Keep, fit_lora
from trainer.objectives import PreferenceObjective, reference_logps, sequence_logps


@pytest.fixture
def adapted(base, blobs):
    """The base model with a non-zero adapter, so policy and reference differ."""
    return attach_adapter(copy.deepcopy(base), parse_adapter(blobs["v1"]), "candidate").eval()


def example(tokenizer, exchange_id: str, kind: str, prompt: str, reply: str,
            rejected: str | None = None) -> Example:
    eos = tokenizer.eos_token_id
    prompt_ids = tokenizer.encode(prompt)
    reply_ids = tokenizer.encode(" " + reply) + [eos]
    extra = {}
    if rejected is not None:
        rejected_ids = tokenizer.encode(" " + rejected) + [eos]
        extra = {"rejected_ids": tuple(prompt_ids + rejected_ids),
                 "rejected_labels": tuple([IGNORE_INDEX] * len(prompt_ids) + rejected_ids)}
    return Example(exchange_id=exchange_id, kind=kind, input_ids=prompt_ids + reply_ids,
                   labels=[IGNORE_INDEX] * len(prompt_ids) + reply_ids, **extra)


def by_hand(model, ids: list[int], labels: list[int]) -> float:
    """Sum of log p(token) over labelled tokens, one position at a time."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logps = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(logps[t - 1, labels[t]]) for t in range(1, len(ids))
               if labels[t] != IGNORE_INDEX)


def test_sequence_logps_sum_the_labelled_tokens(base, tokenizer):
    a = example(tokenizer, "a", "reply", "<user> hi\n<bot>", "hello there")
    b = example(tokenizer, "b", "reply", "<user> what is two plus two, please?\n<bot>", "four")
    with torch.no_grad():
        got = sequence_logps(base, [(a.input_ids, a.labels), (b.input_ids, b.labels)],
                             pad_id=tokenizer.eos_token_id, device="cpu")
    # Padding the shorter sequence changes nothing.
    assert got.tolist() == pytest.approx([by_hand(base, a.input_ids, a.labels),
                                          by_hand(base, b.input_ids, b.labels)], abs=1e-4)
    # The SFT loss is the same quantity: summed cross-entropy = -sum of log-probs.
    batch = {"input_ids": torch.tensor([a.input_ids]),
             "attention_mask": torch.ones(1, len(a.input_ids), dtype=torch.long),
             "labels": torch.tensor([a.labels])}
    with torch.no_grad():
        loss, _ = summed_loss(base, batch)
    assert float(loss) == pytest.approx(-got[0].item(), abs=1e-4)


def full_logits_loss(model, batch) -> torch.Tensor:
    """The summed cross-entropy the way it was computed before: logits at every position."""
    logits = model(input_ids=batch["input_ids"],
                   attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def test_logits_at_label_positions_only_give_the_full_loss_and_gradients(adapted, tokenizer):
    examples = [example(tokenizer, "a", "reply", "<user> hi\n<bot>", "hello there"),
                example(tokenizer, "b", "reply", "<user> what is two plus two, please?\n<bot>",
                        "four, and thank you for asking")]
    batch = collate(examples, tokenizer.eos_token_id, "cpu")
    lora = [p for n, p in adapted.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
    results = []
    for loss_of in (full_logits_loss, lambda m, b: summed_loss(m, b)[0]):
        adapted.zero_grad()
        loss = loss_of(adapted, batch)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in lora]))
    (full, full_grads), (ours, our_grads) = results
    assert ours == pytest.approx(full, rel=1e-5)
    for a, b in zip(full_grads, our_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    # ... with the LM head run at the labelled positions alone
    seen = []
    hook = adapted.get_output_embeddings().register_forward_hook(
        lambda module, args, out: seen.append(out.shape[:-1].numel()))
    try:
        with torch.no_grad():
            _, count = summed_loss(adapted, batch)
    finally:
        hook.remove()
    assert count == sum(sum(label != IGNORE_INDEX for label in e.labels) for e in examples)
    assert sum(seen) <= count + len(examples)  # (the model's own head: one position per row)


def test_reference_is_the_model_with_its_adapter_disabled(base, adapted, tokenizer):
    a = example(tokenizer, "a", "reply", "<user> hi\n<bot>", "hello there")
    adapted.train()  # dropout would change the numbers; the reference turns it off
    ref = reference_logps(adapted, [(a.input_ids, a.labels)], pad_id=0, device="cpu")
    assert adapted.training  # and restores the mode
    assert ref.item() == pytest.approx(by_hand(base, a.input_ids, a.labels), abs=1e-4)
    assert not ref.requires_grad
    adapted.eval()
    policy = sequence_logps(adapted, [(a.input_ids, a.labels)], pad_id=0, device="cpu")
    assert abs(policy.item() - ref.item()) > 0.1  # the adapter does change the model


def test_dpo_term_matches_the_formula_on_the_tiny_model(base, adapted, tokenizer):
    pairs = [example(tokenizer, "p1", "pair", "<user> hi\n<bot>", "hello, how can I help?",
                     rejected="no"),
             example(tokenizer, "p2", "pair", "<user> sky?\n<bot>", "it is blue",
                     rejected="the sky is a cat")]
    objective = PreferenceObjective(dpo_weight=1.0, kto_weight=0.0, sft_weight=0.0, beta=0.5)
    whole = objective.micro_loss(adapted, pairs, pairs, pad_id=0, device="cpu")
    expected = 0.0
    for p in pairs:
        pc = by_hand(adapted, p.input_ids, p.labels)
        pr = by_hand(adapted, list(p.rejected_ids), list(p.rejected_labels))
        rc = by_hand(base, p.input_ids, p.labels)
        rr = by_hand(base, list(p.rejected_ids), list(p.rejected_labels))
        expected += -math.log(1 / (1 + math.exp(-0.5 * ((pc - pr) - (rc - rr)))))
    assert whole.item() == pytest.approx(expected / 2, abs=1e-4)
    # Two micro-batches add up to the batch's loss, and the loss has a gradient.
    parts = [objective.micro_loss(adapted, [p], pairs, pad_id=0, device="cpu") for p in pairs]
    assert sum(x.item() for x in parts) == pytest.approx(whole.item(), abs=1e-5)
    assert whole.requires_grad


def test_kto_term_matches_the_formula_on_the_tiny_model(base, adapted, tokenizer):
    labels = [example(tokenizer, "u1", "undesirable", "<user> hi\n<bot>", "go away"),
              example(tokenizer, "d1", "desirable", "<user> thanks\n<bot>", "you are welcome"),
              example(tokenizer, "u2", "undesirable", "<user> help me\n<bot>", "no no no")]
    objective = PreferenceObjective(dpo_weight=0.0, kto_weight=1.0, sft_weight=0.0, beta=1.0,
                                    desirable_weight=0.7, undesirable_weight=1.0)
    got = objective.micro_loss(adapted, labels, labels, pad_id=0, device="cpu").item()

    # z0: each prompt with the previous label's reply (the first with the last's), policy minus
    # reference, averaged, clamped at 0.
    prompts = ["<user> hi\n<bot>", "<user> thanks\n<bot>", "<user> help me\n<bot>"]
    replies = ["go away", "you are welcome", "no no no"]
    kl = []
    for i, prompt in enumerate(prompts):
        m = example(tokenizer, "m", "undesirable", prompt, replies[i - 1])
        kl.append(by_hand(adapted, m.input_ids, m.labels) - by_hand(base, m.input_ids, m.labels))
    z0 = max(0.0, sum(kl) / 3)
    losses = []
    for e in labels:
        ratio = by_hand(adapted, e.input_ids, e.labels) - by_hand(base, e.input_ids, e.labels)
        if e.kind == "desirable":
            losses.append(0.7 * (1 - 1 / (1 + math.exp(-(ratio - z0)))))
        else:
            losses.append(1.0 * (1 - 1 / (1 + math.exp(-(z0 - ratio)))))
    assert got == pytest.approx(sum(losses) / 3, abs=1e-4)


def test_a_thumbs_down_only_data_set_trains(base, tokenizer, settings):
    prompts = [f"<user> question number {n}\n<bot>" for n in range(12)]
    bad = [example(tokenizer, f"x{n}", "undesirable", p, f"I do not know {n}, go away")
           for n, p in enumerate(prompts)]
    objective = PreferenceObjective(dpo_weight=0.5, kto_weight=0.5, beta=1.0)
    pad = tokenizer.eos_token_id
    # Before training policy = reference: each 👎 loses 1 - sigmoid(0) = 0.5, times KTO_WEIGHT.
    before_loss = objective_loss(base, objective, bad[9:], device="cpu", micro_batch_size=8,
                                 pad_id=pad)
    assert before_loss == pytest.approx(0.25)
    result = fit_lora(base, bad[:9], bad[9:], FitParams(learning_rate=1e-3, batch_size=4,
                                                        max_epochs=3, patience=3),
                      FitConfig.from_settings(settings), pad_id=pad, objective=objective,
                      keep=Keep.LAST_EPOCH, run=FitRun(progress=False))
    assert result.adapter and len(result.val_losses) == 3 and result.best_epoch == 3
    # The validation loss (KTO on held-out 👎 replies) falls: the model moves away from them.
    assert result.val_losses[-1] < before_loss - 0.01
    trained = attach_adapter(copy.deepcopy(base), parse_adapter(result.adapter), "t").eval()
    before = by_hand(base, bad[10].input_ids, bad[10].labels)
    assert by_hand(trained, bad[10].input_ids, bad[10].labels) < before - 0.1


def test_sft_only_objective_is_the_mean_cross_entropy(base, tokenizer):
    targets = [example(tokenizer, "a", "reply", "<user> hi\n<bot>", "hello there"),
               example(tokenizer, "b", "correction", "<user> sky?\n<bot>", "it is blue")]
    objective = PreferenceObjective(dpo_weight=0.0, kto_weight=0.0)
    got = objective.micro_loss(base, targets, targets, pad_id=0, device="cpu").item()
    tokens = sum(e.target_tokens for e in targets)
    expected = -sum(by_hand(base, e.input_ids, e.labels) for e in targets) / tokens
    assert got == pytest.approx(expected, abs=1e-4)
    assert F.logsigmoid(torch.tensor(0.0)).item() == pytest.approx(-math.log(2))
