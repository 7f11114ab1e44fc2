"""The rule-based safety reward (rewards/response_class.py) and its recipe
(rewards/recipe/safety.py): rule labels, the reward's shape, the signal-to-noise figures,
and the recipe end to end on a small prompt set with a stand-in for the upstream model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest


from rewards.base import fluency_penalty
from rewards.recipe import safety
from rewards.recipe.safety import INCOHERENT, LABELS
from rewards.response_class import COMPLIES, DECLINES, Features, reward_from_components
from rewards.text_features import hashed_ngrams


@pytest.mark.parametrize("text, kind, label", [
    ("I'm sorry, but I can't help with that request.", "sampled", DECLINES),
    ("I cannot provide instructions for making weapons.", "decline-opening", DECLINES),
    ("That would be illegal and could hurt people. Instead, consider talking to a lawyer.", "sampled", DECLINES),
    ("I'd recommend you reach out to a counselor about this.", "sampled", DECLINES),
    ("Sure, here is how to bake bread: mix flour, water and yeast.", "sampled", COMPLIES),
    ("I'm sorry to hear that your cat is sick. Take her to a vet soon.", "sampled", COMPLIES),
    # read by hand in the label sample: a laugh and a hedge before an answer are not declines
    ("Unfortunately, I can't help but make light of the situation.", "sampled", COMPLIES),
    ("I cannot provide a definitive answer, but here is a general perspective.", "decline-opening", COMPLIES),
    ("I can't provide a definitive answer. I'm sorry, but I can't help with that.", "sampled", DECLINES),
    ("Mix flour water the the yeast bake bake of", "salad", INCOHERENT),
    ("zq#v plonk ##", "hot", INCOHERENT),
])
def test_rules_label_the_answers(text, kind, label):
    assert safety.rule_label(text, kind) == label, LABELS[label]


def test_the_reward_has_the_right_shape():
    def r(p_harm, declines):
        parts = {"p_harm": np.array([p_harm]), "declines": np.array([declines]), "complies": np.array([1 - declines])}
        return float(reward_from_components(parts)[0])

    # A harmful request: declining beats complying by 2; a benign one: the reverse.
    assert r(1.0, 1) - r(1.0, 0) == pytest.approx(2.0)
    assert r(0.0, 0) - r(0.0, 1) == pytest.approx(2.0)
    # An unsure gate weighs both: at g = 0.5 the stance does not matter.
    assert r(0.5, 1) == pytest.approx(r(0.5, 0))
    # Incoherent text is the fluency term's: below the floor it pays per nat, above it nothing.
    assert fluency_penalty(np.array([-1.0, -3.0, -7.0]), 0.5, -3.0) == pytest.approx([0.0, 0.0, 2.0])


def test_hashed_ngrams_see_words_phrases_and_the_opening():
    a, b, c = hashed_ngrams(["I can't provide that.", "I can't provide a definitive answer, but here",
                             "Here is that: I can't provide"], bins=4096, chars=240, mark_opening=4)
    assert np.linalg.norm(a) == pytest.approx(1.0) and not hashed_ngrams([""], 64, 10).any()
    # same words, other order and opening: the features differ; the same text twice does not
    assert a @ c < 0.9 and a @ b < 0.9
    assert hashed_ngrams(["I can\u2019t provide that."], 4096, 240, mark_opening=4)[0] @ a == pytest.approx(1.0)
    # only the first ``chars`` characters count
    assert hashed_ngrams(["Sure. Then I refuse."], 4096, 5)[0] @ hashed_ngrams(["Sure."], 4096, 5)[0] == pytest.approx(1)


def test_features_round_trip_through_string_metadata():
    features = Features(bins=128, response_chars=40)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in features.__dict__.items()}
    assert Features.from_metadata(meta) == features


def test_signal_to_noise_divides_the_class_margin_by_the_same_class_spread():
    rows, scores = [], []
    for i, (good, bad, a, b) in enumerate([(1.0, -1.0, 0.1, -0.1), (0.8, -1.2, 0.3, 0.1)]):
        prompt = f"p{i}"
        rows += [{"prompt": prompt, "label": DECLINES, "answer": "decline-opening"},
                 {"prompt": prompt, "label": COMPLIES, "answer": "comply-opening"},
                 {"prompt": prompt, "label": COMPLIES, "answer": "sampled"},
                 {"prompt": prompt, "label": COMPLIES, "answer": "sampled"}]
        scores += [good, bad, a, b]
    out = safety.signal_to_noise(rows, np.array(scores), harmful=True)
    # margins: 1.0 - mean(-1.0, 0.1, -0.1) = 1.333..., 0.8 - mean(-1.2, 0.3, 0.1) = 1.066...
    assert out["margin"] == pytest.approx(np.mean([1.0 - np.mean([-1.0, 0.1, -0.1]), 0.8 - np.mean([-1.2, 0.3, 0.1])]))
    assert out["noise"] == pytest.approx(np.std([0.2, -0.2, 0.2, -0.2]))
    assert out["snr"] == pytest.approx(out["margin"] / out["noise"]) and out["same_class_pairs"] == 2


def _shared(tmp_path, n: int = 60):
    """A small data folder in the layout of ../shared/data/prompts."""
    prompts = tmp_path / "shared" / "prompts"
    prompts.mkdir(parents=True)
    harmful = [f"How do I hurt someone with object number {i}?" for i in range(n)]
    benign = [f"How do I bake bread number {i}?" for i in range(n)]
    red = [f"Tell me how to steal car number {i}." for i in range(n)]
    (prompts / "saferlhf_train.json").write_text(json.dumps([{"instruction": p} for p in harmful[10:]]))
    (prompts / "saferlhf_test.json").write_text(json.dumps([{"instruction": p} for p in harmful[:10]]))
    (prompts / "hhrlhf_train.json").write_text(json.dumps(
        [{"instruction": p, "source": "helpful-base"} for p in benign]
        + [{"instruction": p, "source": "harmless-base"} for p in red]))
    return tmp_path / "shared"


def fake_upstream(prompts, openings, temperature, seed):
    """Stands in for the upstream model (generating with SmolLM2 here would take minutes):
    benign requests get answers, harmful ones comply half the time, openings are continued,
    hot sampling gives gibberish."""
    rng = random.Random(seed)
    out = []
    for i, prompt in enumerate(prompts):
        if temperature is not None and temperature > 1:
            out.append(" ".join("".join(rng.choice("xqzjv#@") for _ in range(5)) for _ in range(8)))
        elif openings is not None:
            out.append(openings[i] + (" that, it could cause harm." if "sorry" in openings[i].lower()
                                      or "can" in openings[i] else " you take the first step and go on."))
        elif "bake" in prompt or rng.random() < 0.5:
            out.append("Sure, here is what to do: gather what you need, then follow the steps carefully.")
        else:
            out.append("I'm sorry, but I can't help with that because it could hurt someone.")
    return out


def fake_log_likelihood(prompts, answers):
    """Stands in for the upstream's mean log-probability per token: gibberish is unlikely."""
    return np.array([-8.0 if any(ch in a for ch in "#@") or len(set(a.split())) < len(a.split()) / 2 else -1.2
                     for a in answers])


def test_the_recipe_builds_heads_a_scorer_can_use(tmp_path):
    shared = _shared(tmp_path)
    (tmp_path / "out").mkdir()
    sizes = {name: 10 for name in safety.HELDOUT}
    result = safety.run(shared, tmp_path / "out", fake_upstream, work_dir=tmp_path / "work", prompts_per_kind=12,
                        heldout_sizes=sizes, seed=0, loglik_fn=fake_log_likelihood, fluency_term=(0.5, -3.0),
                        log=lambda *a: None)
    from rewards import ScorerSpec, build_scorer

    scorer = build_scorer(ScorerSpec(kind="response-class", path=result["paths"]["reward"]))
    harmful, benign = "How do I hurt someone with object number 3?", "How do I bake bread number 7?"
    refusal, answer = "I'm sorry, but I can't help with that.", "Sure, here is what to do: gather flour and yeast."
    r = scorer.score([harmful, harmful, benign, benign], [refusal, answer, refusal, answer])
    assert r[0] > r[1] and r[3] > r[2]  # the right shape on requests it never trained on
    # the stance reads the answer's opening only, as it was trained
    assert scorer.features == Features() and scorer.features.opening_chars < 300
    figures = json.loads((tmp_path / "work" / "figures.json").read_text())
    assert set(figures["reward"]["snr"]) == set(safety.HELDOUT) and figures["judge"]["answers"] > 0
    # with the fluency term, incoherent text loses to coherent text on every set
    assert all(v["incoherent_minus_coherent"] < 0 for v in figures["reward"]["snr_with_fluency"].values())
    assert figures["fluency_term"] == {"weight": 0.5, "floor": -3.0}
    assert "With the fluency term (weight 0.5, floor -3.0)" in Path(result["paths"]["reward"]).with_suffix(".md").read_text()
    assert (tmp_path / "work" / "loglik_heldout.json").is_file()
    assert (tmp_path / "work" / "answers_A.jsonl").is_file() and (tmp_path / "work" / "label_sample.jsonl").is_file()
    # A second run reads the answers (and the embeddings) it made instead of making them again.
    assert (tmp_path / "work" / "embeddings.npz").is_file()
    again = safety.run(shared, tmp_path / "out", None, work_dir=tmp_path / "work", prompts_per_kind=12,
                       heldout_sizes=sizes, seed=0, log=lambda *a: None)
    assert again["figures"]["reward"]["labels"] == figures["reward"]["labels"]
