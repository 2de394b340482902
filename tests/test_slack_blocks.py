"""Cards as Block Kit: whatever the engine draws, Slack must accept it (checked against the Block Kit JSON
schema and Slack's documented limits) and nothing is silently lost: what is cut ends in "…" and a link."""
from engine.cards import Card, CardStep, CitationsBlock, HypothesesBlock, LinksBlock, StepsBlock, TextBlock
from engine.models import Citation, Evidence, Hypothesis, Link
from bot.slack.blocks import APPROVE, MAX_BLOCKS, render
from tests.slack_standin import block_kit_violations

MORE = "https://warroom.example.com/cards/7?sig=abc"


def _step(i: int, **extra) -> CardStep:
    return CardStep(step_id=100 + i, index=i, title=f"Step {i} " + "x" * 300, connector="ssh", target="web-01",
                    risk="state_change", status="proposed", actions=["approve", "reject"], **extra)


def _big_card(steps: int) -> Card:
    evidence = [Evidence(kind="change", text="deploy " + "y" * 1200, source="https://ci.example.com/1")] * 4
    hypotheses = [Hypothesis(title="Bad deploy <script>" + "z" * 400, cause="c" * 2000, confidence=0.71,
                             evidence=evidence, factors={"signal_strength": 0.8})] * 3
    citations = [Citation(document_id=i, chunk_id=i, title=f"Runbook {i}", source=f"/srv/runbooks/{i}.md",
                          score=0.5) for i in range(40)]
    return Card(kind="annotation", title="warroom on " + "why is payments-api down " * 20, blocks=[
        TextBlock(text="w" * 5000, style="warning"),
        HypothesesBlock(items=hypotheses, service="payments-api"),
        CitationsBlock(items=citations),
        StepsBlock(plan_id=7, title="Plan: " + "p" * 4000, items=[_step(i) for i in range(1, steps + 1)]),
        LinksBlock(items=[Link(title="Dashboard", url="https://grafana.example.com/d/1")] * 30),
    ])


def test_a_normal_card_renders_buttons_for_every_step_within_every_limit():
    card = _big_card(steps=3)
    text, blocks = render(card, more_url=MORE)
    assert block_kit_violations(blocks) == []
    approve_ids = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"].startswith(APPROVE)]
    assert approve_ids == [f"{APPROVE}_101", f"{APPROVE}_102", f"{APPROVE}_103"]
    assert text and len(text) <= 3000


def test_an_oversized_card_is_cut_with_an_ellipsis_and_a_link_instead_of_failing():
    text, blocks = render(_big_card(steps=40), more_url=MORE)
    assert block_kit_violations(blocks) == []
    assert len(blocks) == MAX_BLOCKS
    flat = str(blocks)
    assert "… <" + MORE + "|full text>" in flat  # a cut section
    assert "more blocks not shown" in flat and MORE in str(blocks[-1])
    assert blocks[0]["text"]["text"].endswith("…") and len(blocks[0]["text"]["text"]) <= 150


def test_user_text_cannot_become_markup_or_mentions():
    card = Card(kind="notice", title="t", blocks=[TextBlock(text="hi"), HypothesesBlock(items=[
        Hypothesis(title="<!channel> <@U123> & friends", confidence=0.5)])])
    _, blocks = render(card)
    shown = " ".join(b["text"]["text"] for b in blocks if b["type"] == "section")
    assert "<!channel>" not in shown and "<@U123>" not in shown
    assert "&lt;!channel&gt;" in shown and "&amp; friends" in shown
