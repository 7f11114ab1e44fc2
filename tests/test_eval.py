"""Evaluation: preference-rate arithmetic (Eq. 12), judging, and ``mara eval`` end to end."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.models import save_tiny_llama

from cli.eval import add_eval_parser, eval_main
from core.agent_file import save_agent
from core.config import SamplingConfig
from core.networks import Actor
from envs.generation import AlignedGenerator
from evaluation.answers_file import ARGUMENTS
from evaluation.judges import Judge, parse_judge_spec
from evaluation.preference import (
    LOSE,
    TIE,
    WIN,
    compare_scores,
    decline_openings,
    is_refusal,
    length_judge,
    preference_rate,
    refusal_judge,
)
from evaluation.report import pick_examples, results_markdown
from evaluation.run import MARA, UPSTREAM_GREEDY, UPSTREAM_SAMPLED, EvalResult, position_shares, run_eval
from rewards.base import FunctionScorer

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["How can I bake bread?", "Tell me a joke.", "Why is the sky blue?"]
LENGTH = "evaluation.preference:length_judge"


# ----------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("counts, rate", [((5, 3, 2), 30.0), ((0, 0, 4), -100.0), ((3, 0, 0), 100.0),
                                          ((1, 2, 1), 0.0), ((0, 7, 0), 0.0), ((2, 0, 1), 100 / 3)])
def test_preference_rate_is_eq_12(counts, rate):
    assert preference_rate(*counts) == pytest.approx(rate)


def test_preference_rate_of_nothing_or_negative_counts_is_refused():
    with pytest.raises(ValueError, match="undefined"):
        preference_rate(0, 0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        preference_rate(1, -1, 0)


def test_compare_scores_with_a_tie_margin():
    assert compare_scores(1.0, 0.0) == WIN
    assert compare_scores(0.0, 1.0) == LOSE
    assert compare_scores(0.5, 0.5) == TIE
    assert compare_scores(1.0, 0.9, tie_margin=0.2) == TIE
    assert compare_scores(1.0, 0.8, tie_margin=0.2) == TIE  # |difference| <= margin is a tie
    assert compare_scores(1.0, 0.7, tie_margin=0.2) == WIN
    with pytest.raises(ValueError):
        compare_scores(1.0, 0.0, tie_margin=-1)
    with pytest.raises(ValueError, match="NaN"):
        compare_scores(float("nan"), 0.0)


def test_cost_judge_prefers_the_lower_score():
    # A cost model scores harm: MARA's cost 0.2 against the baseline's 1.5 is a win.
    assert compare_scores(0.2, 1.5, lower_is_better=True) == WIN
    assert compare_scores(1.5, 0.2, lower_is_better=True) == LOSE
    assert compare_scores(1.0, 1.05, tie_margin=0.1, lower_is_better=True) == TIE


@pytest.mark.parametrize("text", ["I'm sorry, but I can't help with that.", "I CANNOT do this.",
                                  "As an AI language model, I won't.", "I am not able to assist.",
                                  "I\u2019m unable to provide that."])
def test_refusals_are_detected(text):
    assert is_refusal(text)
    assert refusal_judge("q", text) == 1.0


@pytest.mark.parametrize("text", ["Mix flour, water, yeast and salt, then bake at 230 C.",
                                  "The sky is blue because of Rayleigh scattering.", ""])
def test_answers_are_not_refusals(text):
    assert not is_refusal(text)
    assert refusal_judge("q", text) == 0.0


def test_decline_openings_count_the_first_words_of_declining_answers_only():
    answers = ["I\u2019m sorry, but I can't help with that.", "I'm sorry, but I can't help with this request.",
               "As a chatbot, I cannot do that.", "Sure! Bread needs flour, water and time."]
    assert decline_openings(answers) == [("i'm sorry, but i can't help", 2), ("as a chatbot, i cannot do", 1)]
    assert decline_openings(answers, words=2, top=1) == [("i'm sorry,", 2)]
    assert decline_openings(answers[3:]) == []



def test_judge_specs_parse_kind_path_and_role():
    s = parse_judge_spec(f"len=function:{LENGTH}")
    assert (s.name, s.kind, s.path, s.role, s.lower_is_better) == ("len", "function", LENGTH, "helpful", False)
    s = parse_judge_spec("cost=score-model:PKU-Alignment/beaver-7b-v1.0-cost:harmless")
    assert (s.kind, s.path, s.role, s.lower_is_better) == ("score-model", "PKU-Alignment/beaver-7b-v1.0-cost",
                                                           "harmless", True)
    s = parse_judge_spec("srv=http:http://127.0.0.1:8000/score:harmless-reward")
    assert (s.kind, s.path, s.role, s.lower_is_better) == ("http", "http://127.0.0.1:8000/score", "harmless", False)
    with pytest.raises(ValueError, match="NAME=KIND:PATH"):
        parse_judge_spec("function:x:y")


def test_accepted_positions_pool_ten_and_above():
    share = position_shares([1, 1, 2, 10, 14])
    assert list(share) == [str(k) for k in range(1, 10)] + ["10+"]
    assert share["1"] == pytest.approx(0.4) and share["10+"] == pytest.approx(0.4)
    assert sum(position_shares([]).values()) == 0


# ----------------------------------------------------------------------------- run_eval
class ConstantPerSystemScorer:
    """Scores an answer by its length in characters: deterministic and fast."""

    name = "chars"

    def score(self, prompts, responses):
        return np.array([float(len(r)) for r in responses])


def random_actor(d: int, seed: int = 1) -> Actor:
    torch.manual_seed(seed)
    return Actor(state_dim=d, hidden_size=16)


def test_run_eval_counts_and_mirrors_a_cost_judge(tiny_llm):
    gen = AlignedGenerator(tiny_llm, random_actor(tiny_llm.hidden_size), sampling=SamplingConfig(max_new_tokens=8),
                           batch_size=2)
    scorer = ConstantPerSystemScorer()
    judges = {"help": Judge("help", scorer, "helpful"),
              "cost": Judge("cost", scorer, "harmless", lower_is_better=True)}
    result = run_eval(gen, [("a", PROMPTS), ("b", PROMPTS[:2] + PROMPTS[:1])], judges, num_prompts=2, seed=3,
                      sampled=True, fluency=True, progress=False)
    assert result.systems == [MARA, UPSTREAM_GREEDY, UPSTREAM_SAMPLED]
    assert [r["prompt_set"] for r in result.records] == ["a", "a", "b", "b"]
    assert [r["prompt"] for r in result.records[2:]] == PROMPTS[:2]  # the duplicate counted once
    for ps in ("a", "b"):
        for comp in (UPSTREAM_GREEDY, UPSTREAM_SAMPLED):
            help_, cost = result.comparison(ps, comp, "help"), result.comparison(ps, comp, "cost")
            assert help_.wins + help_.ties + help_.losses == 2
            # the same scores read as a cost swap wins and losses
            assert (cost.wins, cost.ties, cost.losses) == (help_.losses, help_.ties, help_.wins)
            assert cost.rate == -help_.rate
    for r in result.records:
        s = r["scores"]["help"]
        assert s[MARA] == len(r["answers"][MARA])
        assert r["outcomes"]["help"][UPSTREAM_GREEDY] == compare_scores(s[MARA], s[UPSTREAM_GREEDY])
    # fluency: the upstream's mean log-likelihood of each system's answers, per prompt set
    assert set(result.fluency) == {(ps, s) for ps in ("a", "b") for s in result.systems}
    b_answers = [r["answers"][UPSTREAM_SAMPLED] for r in result.records if r["prompt_set"] == "b"]
    direct = gen.log_likelihood(PROMPTS[:2], b_answers)
    assert result.fluency[("b", UPSTREAM_SAMPLED)] == pytest.approx(float(np.mean(direct)), abs=1e-5)
    assert all(v < 0 for v in result.fluency.values())
    # how often each system's answer is the upstream's greedy answer: always, for the upstream itself
    for ps in ("a", "b"):
        rows = [r for r in result.records if r["prompt_set"] == ps]
        same = np.mean([r["answers"][MARA] == r["answers"][UPSTREAM_GREEDY] for r in rows])
        assert result.identical_rates[(ps, MARA)] == same and result.identical_rates[(ps, UPSTREAM_GREEDY)] == 1.0
    assert "= upstream greedy" in results_markdown(result) and "## Decline openings" in results_markdown(result)


def test_with_a_horizon_fluency_is_also_measured_over_the_part_the_agent_decided(tiny_llm):
    gen = AlignedGenerator(tiny_llm, random_actor(tiny_llm.hidden_size), sampling=SamplingConfig(max_new_tokens=8),
                           batch_size=2, horizon=3)
    result = run_eval(gen, [("a", PROMPTS[:2])], {"help": Judge("help", ConstantPerSystemScorer(), "helpful")},
                      fluency=True, progress=False)
    assert result.opening_tokens == 3 and set(result.opening_fluency) == set(result.fluency)
    answers = [r["answers"][MARA] for r in result.records]
    opening = gen.log_likelihood(PROMPTS[:2], answers, max_tokens=3)
    assert result.opening_fluency[("a", MARA)] == pytest.approx(float(np.mean(opening)), abs=1e-5)
    # Over the first tokens only: the mean of those tokens' log-probabilities, not the whole answer's.
    whole = gen.log_likelihood(PROMPTS[:2], answers)
    assert not np.allclose(opening, whole)
    assert np.allclose(gen.log_likelihood(PROMPTS[:2], answers, max_tokens=1000), whole)
    assert "fluency, first 3 tokens" in results_markdown(result)


# ----------------------------------------------------------------------------- mara eval
def eval_parser() -> argparse.ArgumentParser:
    import cli.main as cli

    parser = cli.build_parser()
    if "eval" in _subcommands(parser):
        return parser
    parser = argparse.ArgumentParser(prog="mara")  # not wired into cli.main yet
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}


@pytest.fixture(scope="module")
def eval_inputs(tiny_llm_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    agent = save_agent(random_actor(64), tmp / "agent.safetensors", upstream_model=str(tiny_llm_path),
                       reward=json.dumps([{"kind": "function", "path": LENGTH}]))
    prompts = tmp / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": p} for p in PROMPTS] + [{"instruction": "Extra prompt"}]))
    return agent, prompts, tmp


def eval_args(agent, prompts, out) -> list[str]:
    return ["eval", "--agent", str(agent), "--prompts", f"tiny={prompts}", "--num-prompts", "3", "--seed", "1",
            "--judge", f"length=function:{LENGTH}",
            "--judge", "refuses=function:evaluation.preference:refusal_judge:harmless-reward",
            "--judge", f"wordcost=function:{LENGTH}:harmless",
            "--tie-margin", "0.5", "--sampled", "--best-of-n", "2", "--bon-scorer", "length",
            "--max-new-tokens", "6", "--batch-size", "2", "--out", str(out), "--no-progress"]


def test_mara_eval_end_to_end(eval_inputs, capsys):
    agent, prompts, tmp = eval_inputs
    out = tmp / "out"
    args = eval_parser().parse_args(eval_args(agent, prompts, out))
    assert eval_main(args) == 0
    assert "# MARA evaluation" in capsys.readouterr().out
    for name in ("results.md", "results.csv", "answers.jsonl", "accepted_positions.png", "scores.png"):
        assert (out / name).stat().st_size > 0, name
    for png in ("accepted_positions.png", "scores.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    comparators = [UPSTREAM_GREEDY, UPSTREAM_SAMPLED, "best-of-2"]
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(records) == 3 and {r["prompt_set"] for r in records} == {"tiny"}
    for r in records:
        assert set(r["answers"]) == {MARA, *comparators}
        assert set(r["scores"]) == {"length", "refuses", "wordcost"}
        assert len(r["best_of_n"]["candidates"]) == 2
        assert r["answers"]["best-of-2"] == r["best_of_n"]["candidates"][int(np.argmax(r["best_of_n"]["scores"]))]
        assert r["answers"][UPSTREAM_SAMPLED] == r["best_of_n"]["candidates"][0]

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(row["prompt_set"], row["comparator"]) for row in rows] == [("tiny", c) for c in comparators]
    for row in rows:
        assert row["n"] == "3"
        for judge in ("length", "refuses", "wordcost"):
            outcomes = [r["outcomes"][judge][row["comparator"]] for r in records]
            counts = [outcomes.count(k) for k in (WIN, TIE, LOSE)]
            assert [int(row[f"{judge}_{k}"]) for k in ("win", "tie", "lose")] == counts
            assert float(row[f"{judge}_rate"]) == pytest.approx(preference_rate(*counts), abs=1e-3)
        # the same scores as a cost: wins and losses swap
        assert (row["length_win"], row["length_lose"]) == (row["wordcost_lose"], row["wordcost_win"])
        assert 0 <= float(row["refusal_mara"]) <= 1

    md = (out / "results.md").read_text()
    assert "| tiny | upstream-greedy | 3 |" in md and "| tiny | best-of-2 | 3 |" in md
    assert "length (helpful)" in md and "wordcost (harmless)" in md
    assert "ALSO the training reward" in md and "not the training reward" in md  # agent records its reward
    assert "also the judge 'length'" in md  # best-of-N picked by a judge is flagged
    assert "## Examples: MARA vs. upstream-greedy (outcome by length)" in md


def test_mara_eval_refuses_bad_judges_clearly(eval_inputs):
    agent, prompts, tmp = eval_inputs
    parser = eval_parser()
    base = ["eval", "--agent", str(agent), "--prompts", f"tiny={prompts}", "--out", str(tmp / "bad")]
    with pytest.raises(ValueError, match="unknown scorer kind"):
        eval_main(parser.parse_args(base + ["--judge", "x=nosuchkind:foo"]))
    with pytest.raises(ValueError, match="no_such_function"):
        eval_main(parser.parse_args(base + ["--judge", "x=function:evaluation.run:no_such_function"]))
    with pytest.raises(ValueError, match="--bon-scorer"):
        eval_main(parser.parse_args(base + ["--judge", f"x=function:{LENGTH}", "--best-of-n", "2"]))


def test_mara_eval_command_line(eval_inputs, capsys):
    import cli.main as cli

    if "eval" not in _subcommands(cli.build_parser()):
        pytest.skip("`mara eval` is not wired into cli/main.py yet (add_eval_parser)")
    agent, prompts, tmp = eval_inputs
    out = tmp / "cli-out"
    args = [a for a in eval_args(agent, prompts, out) if a not in ("--sampled",)]
    args += ["--agent-decisions", "sampled", "--horizon", "4"]
    assert cli.main(args) == 0  # `python -m cli.main` as a process of its own: test_generation.py
    assert (out / "results.md").is_file() and (out / "scores.png").is_file()
    assert "- agent decisions: sampled" in (out / "results.md").read_text()
    assert "- agent horizon: 4 tokens" in (out / "results.md").read_text()
    assert "- upstream's continuation past the horizon: sampled" in (out / "results.md").read_text()
    # A refused judge.
    capsys.readouterr()
    assert cli.main(["eval", "--agent", str(agent), "--prompts", f"tiny={prompts}", "--out", str(tmp / "bad"),
                     "--judge", "x=nosuchkind:foo"]) == 2
    assert "unknown scorer kind" in capsys.readouterr().err


def test_length_judge_counts_words():
    assert length_judge("q", "one two  three") == 3.0
    assert FunctionScorer(LENGTH).score(["q"], ["a b"]).tolist() == [2.0]


def test_without_judges_the_projects_default_judge_is_used(monkeypatch):
    import rewards as rewards

    built = []
    monkeypatch.setattr(rewards, "build_scorer", lambda spec: built.append(spec) or ConstantPerSystemScorer())
    from evaluation.judges import default_judges

    judges = default_judges()
    assert [s.kind for s in built] == [s.kind for s in rewards.DEFAULT_JUDGE]
    for name, judge in judges.items():
        assert judge.name == name and judge.role == "overall" and not judge.lower_is_better
        assert judge.source.startswith(f"{built[0].kind}:")


def test_a_judge_is_recognised_as_the_training_reward_by_any_path_to_it(tmp_path, monkeypatch):
    """The agent records its reward with an absolute path; a judge named by a relative path to
    the same head is still flagged as the training reward (not independent evidence)."""
    head = tmp_path / "heads" / "reward.safetensors"
    head.parent.mkdir()
    head.write_bytes(b"x")
    other = tmp_path / "heads" / "judge.safetensors"
    other.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    scorer = FunctionScorer(LENGTH)
    result = EvalResult(judges=[], systems=[MARA], records=[], comparisons=[], refusal_rates={},
                        mean_scores={}, accepted_positions={}, seconds={},
                        training_reward=[f"embedding-bt:{head}"])
    same = Judge("reward", scorer, "overall", source="embedding-bt:heads/reward.safetensors")
    different = Judge("judge", scorer, "overall", source="embedding-bt:heads/judge.safetensors")
    other_kind = Judge("fn", scorer, "overall", source="function:heads/reward.safetensors")
    assert result.judge_is_training_reward(same) is True
    assert result.judge_is_training_reward(different) is False
    assert result.judge_is_training_reward(other_kind) is False
    # the shipped agent records its reward relative to the project, whatever the current folder
    shipped = EvalResult(judges=[], systems=[MARA], records=[], comparisons=[], refusal_rates={},
                         mean_scores={}, accepted_positions={}, seconds={},
                         training_reward=["embedding-bt:rewards/data/reward_head.safetensors"])
    installed = Judge("reward", scorer, "overall", source=f"embedding-bt:{ROOT / 'rewards/data/reward_head.safetensors'}")
    assert shipped.judge_is_training_reward(installed) is True


def test_examples_show_wins_and_losses_where_the_answers_differ():
    def record(i, mara, upstream, outcome):
        return {"prompt_set": "p", "index": i, "prompt": f"q{i}", "answers": {MARA: mara, UPSTREAM_GREEDY: upstream},
                "outcomes": {"j": {UPSTREAM_GREEDY: outcome}}}
    records = [record(0, "same", "same", TIE), record(1, "a", "b", WIN), record(2, "a", "b", WIN),
               record(3, "a", "b", WIN), record(4, "a", "b", LOSE), record(5, "a", "b", TIE)]
    picked = [r["index"] for r in pick_examples(records, UPSTREAM_GREEDY, "j", per_outcome=2)]
    assert picked == [1, 2, 4]  # two wins, the one loss; never an identical pair


# ----------------------------------------------------------------------------- interruptions
def test_an_evaluation_killed_midway_resumes_to_the_table_of_an_uninterrupted_one(eval_inputs, tmp_path, capsys):
    """SIGKILL after the first batches: answers.jsonl holds whole batches (at most one lost),
    ``mara eval --resume`` answers the rest, and every figure equals an uninterrupted run's.
    Only the killed evaluation runs in a process of its own; like this one, with one torch thread."""
    import os
    import signal
    import time

    from cli.main import main

    agent, _, _ = eval_inputs
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": f"Question {i}: how do I {w}?"} for i, w in
                                   enumerate(["bake", "sing", "fly", "read", "code", "swim", "draw", "cook"] * 2)]))

    def command(out):
        return [sys.executable, "-m", "cli.main", "eval", "--agent", str(agent), "--prompts", f"many={prompts}",
                "--judge", f"length=function:{LENGTH}", "--sampled", "--fluency", "--decisions", "sampled",
                "--max-new-tokens", "24", "--batch-size", "2", "--seed", "4", "--out", str(out), "--no-progress"]

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    killed = subprocess.Popen(command(cut), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    answers = cut / "answers.jsonl"
    deadline = time.monotonic() + 240
    while not (answers.is_file() and answers.read_text().count("\n") >= 2):
        assert killed.poll() is None and time.monotonic() < deadline, killed.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL and not (cut / "results.md").exists()
    kept = [line for line in answers.read_text().split("\n") if line.strip()]
    assert 2 <= len(kept) < 16
    # What the agent file decides ("agent") is kept as it was resolved, so that the resumed part
    # answers as the first did even if the file's recommendations change in between.
    saved = json.loads((cut / ARGUMENTS).read_text())
    resolved = ("agent", "decisions", "horizon", "accept_threshold", "request_gate", "decline_sentences")
    assert {k: saved[k] for k in resolved} == {"agent": str(agent), "decisions": "sampled", "horizon": "all",
                                               "accept_threshold": 0.5, "request_gate": "off", "decline_sentences": "off"}

    capsys.readouterr()
    assert main(command(cut)[3:]) == 2  # a new run would lose the answers
    assert f"--resume {cut}" in capsys.readouterr().err
    assert main(["eval", "--resume", str(cut), "--no-progress"]) == 0
    assert "prompts answered" in capsys.readouterr().out
    assert main(command(whole)[3:]) == 0

    assert (cut / "results.csv").read_text() == (whole / "results.csv").read_text()
    table = (cut / "results.md").read_text().split("## ")[0]
    assert table == (whole / "results.md").read_text().split("## ")[0] and "| many | upstream-greedy | 16 |" in table

    def answered(out):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (out / "answers.jsonl").read_text().splitlines()]

    assert answered(cut) == answered(whole) and len(answered(cut)) == 16


def test_resume_refuses_other_settings_and_a_folder_without_an_evaluation(eval_inputs, tmp_path):
    agent, prompts, _ = eval_inputs
    parser = eval_parser()
    with pytest.raises(FileNotFoundError, match="no evaluation to resume"):
        eval_main(parser.parse_args(["eval", "--resume", str(tmp_path)]))
    with pytest.raises(ValueError, match=r"drop \['seed'\]"):
        eval_main(parser.parse_args(["eval", "--resume", str(tmp_path), "--seed", "3"]))
    with pytest.raises(ValueError, match="--prompts NAME=SOURCE and --out OUT"):
        eval_main(parser.parse_args(["eval", "--agent", str(agent)]))


def test_fluency_on_long_prompts_at_batch_32_stays_within_a_memory_cap(smollm2_path, tmp_path):
    """32 prompts of ~1,000 tokens at batch 32 with --fluency, in a process of its own whose
    peak RSS is measured. Full-vocabulary log-probabilities over every prompt position would
    take 32 x 1,000 x 49,152 floats (6.3 GB) twice over; only the answers' positions are scored."""

    model = save_tiny_llama(tmp_path / "long-context", smollm2_path, context=2048)
    filler = " ".join(f"word{i}" for i in range(270))  # ~1,000 tokens
    prompts = tmp_path / "long.json"
    prompts.write_text(json.dumps([{"instruction": f"{i}: {filler} Summarise."} for i in range(32)]))
    out = tmp_path / "out"
    # The peak of the command's own memory (VmHWM), not ru_maxrss: Linux carries the parent's peak
    # into a child's ru_maxrss when it execs, and this test process may hold a model or an engine.
    runner = ("import sys; from pathlib import Path; from cli.main import main; code = main(sys.argv[1:]); "
              "status = Path('/proc/self/status').read_text(); "
              "print('peak_rss_kib', status.split('VmHWM:')[1].split()[0]); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", runner, "eval", "--agent", "untrained", "--model", str(model),
                           "--prompts", f"long={prompts}", "--judge", f"length=function:{LENGTH}", "--fluency",
                           "--batch-size", "32", "--max-new-tokens", "4", "--out", str(out), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak_gib = int(proc.stdout.split("peak_rss_kib")[-1].split()[0]) / 2**20
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(records) == 32 and all(r["fluency"][MARA] < 0 for r in records)
    assert peak_gib < 3.0, f"peak RSS {peak_gib:.2f} GiB"
    print(f"peak RSS {peak_gib:.2f} GiB")
