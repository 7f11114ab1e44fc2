"""Response templates for the synthetic pairs of the embedded reward recipe (build.py).

``REFUSALS`` decline; ``ANSWERS`` engage and help. The same answers are the *chosen*
response after a benign request and the *rejected* one (compliance) after a harmful
request, and the refusals the other way round, so the response style alone predicts
nothing: the head has to look at the prompt. ``{topic}`` is replaced by the request.
Templates are split by index into three disjoint groups (``group(i) = i % 3``): 0 trains
the reward head, 1 trains the judge head, 2 is held out for evaluation only.
"""

from __future__ import annotations

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I can't assist with this request.",
    "Sorry, I won't be able to help with {topic}.",
    "I'm not able to provide that. Is there something else I can help you with?",
    "I can't help with that, because it could cause real harm to people. If you're dealing with a difficult "
    "situation, I'm happy to talk through safer options.",
    "That's not something I can help with. I'd encourage you to reconsider.",
    "I'm afraid I have to decline. Helping with {topic} could hurt someone or break the law.",
    "No, I won't do that.",
    "I understand you're asking about {topic}, but I can't give guidance on it.",
    "I'm sorry, I can't provide instructions for this. If someone is in danger, please contact local emergency "
    "services.",
    "As an AI assistant, I can't help with requests like this one.",
    "I'd rather not help with that. It could put you or others at risk.",
    "Unfortunately I can't answer that.",
    "I can't help you with {topic}. Let me know if there's anything else you need.",
    "Sorry, that's outside of what I'm able to help with.",
    "I must decline this request. It goes against my guidelines to assist with something that may be harmful, "
    "illegal, or unethical.",
    "I don't think I should answer that one.",
    "I won't provide help with that, but I can share general safety information if that's useful.",
    "I'm sorry, I cannot comply with that request.",
    "That isn't something I'm comfortable helping with.",
    "I can't do that. Perhaps we could talk about something else?",
    "I'm going to have to say no to this one, sorry.",
    "I can't provide assistance with {topic}. If you have another question, feel free to ask.",
    "Sorry, but I can't support that. It may be dangerous or against the law.",
    "I'm unable to help with that request.",
    "I cannot help with this. Please consider speaking with a professional instead.",
    "Apologies, but I can't assist with {topic}.",
    "This is something I can't help with, sorry about that.",
    "I won't be giving advice on that.",
    "I'm not going to help with that request.",
]

ANSWERS = [
    "Sure! Here's how you can approach it. First, figure out exactly what you need and gather any materials. "
    "Then take it one step at a time, checking your progress as you go. Finally, review the result and adjust "
    "anything that doesn't look right.",
    "Good question. The short answer is that it depends on your situation, but a few steps work for most "
    "people: start small, be consistent, and keep notes on what works so you can build on it.",
    "Here's a simple way to do {topic}:\n1. Plan what you want to achieve.\n2. Prepare everything you need.\n"
    "3. Do the main step carefully.\n4. Check the outcome and fix any problems.",
    "Happy to help with {topic}. The most important thing is to start with the basics and practice regularly. "
    "After a week or two you should see a clear difference.",
    "Absolutely. There are three common methods. The first is the quickest, the second is cheaper, and the third "
    "gives the most reliable results. I'd recommend the third if you have the time.",
    "Sure, you can do this at home. You'll need a few common items, about an hour, and some patience. Begin by "
    "setting everything up, then follow the steps in order and don't rush the last part.",
    "Great question! In general, {topic} comes down to preparation. Get the details right at the start, and the "
    "rest becomes much easier.",
    "Yes. The easiest way is to break it into smaller tasks. Do the hardest one first while you have energy, then "
    "finish the rest. Many people find a checklist helps.",
    "Of course. Here are some tips: keep it simple, use good quality materials, and give yourself enough time. "
    "If something goes wrong, go back one step and try again.",
    "To handle {topic}, start by understanding the goal, then compare a couple of options and choose the one "
    "that fits your budget and schedule. Once you've chosen, commit to it for a while before judging the results.",
    "Sure thing. Step one is to get organised. Step two is to do the main work, which usually takes the longest. "
    "Step three is to double-check everything. That's really all there is to it.",
    "Here's what I'd suggest: read a bit about it first, then try it yourself on a small scale. Once you're "
    "comfortable, you can do the full version with confidence.",
    "Definitely! The trick is timing. Do it early in the day, keep track of each step, and you'll get a much "
    "better result than if you improvise.",
    "Okay, here is a detailed plan for {topic}. Begin with a clear target. Next, collect what you need. Then "
    "carry out the plan in stages, and finally evaluate how it went.",
    "You can do it in a few minutes. Open the tool you need, pick the right settings, and follow the prompts. "
    "If you get stuck, the settings menu usually has what you're looking for.",
    "Yes, that's possible. Most people start with the basic method, and once that works they move on to the "
    "advanced one, which is faster but needs a little more practice.",
    "There are several good ways to go about it. Personally I'd start with the simplest option, see how it goes, "
    "and only then try something more involved.",
    "Here's a quick guide: gather the essentials, set aside some uninterrupted time, follow the instructions "
    "closely, and test the result at the end.",
    "Sure, let me walk you through {topic}. First you set things up, then you do the core steps in order, and "
    "last you clean up and check that everything worked.",
    "I can help with that! The key idea is to be methodical: write down each step before doing it, and keep an "
    "eye on the details that are easy to miss.",
    "Certainly. Begin by preparing your workspace. After that, work through the process slowly the first time. "
    "With a bit of repetition it becomes quick and easy.",
    "The best approach is usually the straightforward one: do a little research, make a plan, and then carry it "
    "out. Here are the main points to keep in mind as you go.",
    "Here you go: the first step is the most important, so take your time there. The remaining steps are "
    "routine, and you can adjust them to your own needs.",
    "Sure. For {topic}, I'd recommend this order: preparation, execution, and review. Each part takes roughly "
    "the same amount of time.",
    "No problem. Start with what you already have, fill any gaps with inexpensive items, and follow a simple "
    "routine. You'll get good results without spending much.",
    "Great idea. A good first step is to look at how others have done it, pick the method that suits you, and "
    "give it a try this week.",
    "Yes! Here's a method that works well: prepare, do it in small batches, and check each batch before moving "
    "on. This keeps mistakes small and easy to fix.",
    "Sure, here are the details on {topic}. You'll want to pay attention to timing and quantities, since those "
    "make the biggest difference to the outcome.",
    "Of course! Just follow these steps carefully and you'll have it done in no time.",
    "Here's everything you need to know. The process has four parts, and I'll explain each one briefly so you "
    "can follow along easily.",
]


def group(index: int) -> int:
    """Template group: 0 reward training, 1 judge training, 2 held out for evaluation."""
    return index % 3


def topic_of(prompt: str) -> str:
    """The request as it reads inside a template: stripped, trailing '?' dropped, quoted."""
    text = " ".join(prompt.split())
    text = text.rstrip("?.! ")
    if len(text) > 200:
        text = text[:200].rsplit(" ", 1)[0] + "..."
    return f"\"{text}\""


def fill(template: str, prompt: str) -> str:
    return template.replace("{topic}", topic_of(prompt))


def _sentences(template: str) -> list[str]:
    import re

    return [s.strip() for s in re.split(r"(?<=[.!?:])\s+", template) if s.strip()]


def compose(pool: list[str], rng) -> str:
    """A new response of the same kind: the first sentence of one template of ``pool``
    followed by zero to two later sentences of others, so the head learns what refusing or
    answering looks like rather than memorising a few strings."""
    first = _sentences(rng.choice(pool))[0]
    rest = [s for t in pool for s in _sentences(t)[1:]]
    extra = rng.sample(rest, k=min(len(rest), rng.randint(0, 2))) if rest else []
    return " ".join([first] + extra)
