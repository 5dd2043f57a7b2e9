"""Teacher-forced traces of the supervised stages (training/sft.py): the tool decision left to
chance, and the restated question the decision token follows."""

from __future__ import annotations

import pytest

from visionthink.episode.parser import ToolCall
from visionthink.errors import InputError
from visionthink.training.sft import teacher_traces


def test_traces_restate_the_question_s_first_words_before_the_decision(builder, samples):
    traces = teacher_traces(builder, samples[:16], tool_fraction=0.5, seed=0, restate_words=4)
    for sample, trace in zip(samples[:16], traces, strict=True):
        words = " ".join(sample.question.replace("<image>", "").split()[:4])
        first = trace.turns[0]
        assert first.text.startswith(f"<think>\n{words}\n"), first.text
        assert trace.used_high_res == isinstance(first.parsed, ToolCall)
        assert trace.final_answer is not None and trace.final_answer.answer == sample.answer
    # The tool is called at random, whatever the question: both decisions appear.
    assert 0 < sum(trace.used_high_res for trace in traces) < 16


def test_the_view_note_says_what_the_view_shows_and_the_tool_habit_ignores_it(builder, samples):
    """The note follows the image's need (at 1/4; at full resolution everything is seen); whether
    the trace calls the tool does not: the same sample draws the same decision whatever it needs."""
    from dataclasses import replace

    from visionthink.training.sft import VIEW_NOTES

    stripes = [s for s in samples if s.kind == "stripes"][:12]
    assert {s.use_tool for s in stripes} == {True, False}
    flipped = [replace(s, use_tool=not s.use_tool) for s in stripes]
    for mode in ("adaptive", "full"):
        traces = teacher_traces(builder, stripes, 0.5, seed=0, mode=mode, restate_words=4, describe_view=True)
        again = teacher_traces(builder, flipped, 0.5, seed=0, mode=mode, restate_words=4, describe_view=True)
        for sample, trace, other in zip(stripes, traces, again, strict=True):
            note = VIEW_NOTES[bool(sample.use_tool) and mode != "full"]
            assert trace.turns[0].text.split("\n")[2] == note, trace.turns[0].text
            assert trace.used_high_res == other.used_high_res
    assert len({len(builder.processor.tokenizer(note)["input_ids"]) for note in VIEW_NOTES.values()}) == 1


def test_traces_without_restatement_open_with_the_decision(builder, samples):
    for trace in teacher_traces(builder, samples[:8], tool_fraction=0.5, seed=0):
        assert trace.turns[0].text.startswith(("<think>\nI need", "<think>\nThe image")), trace.turns[0].text


def test_a_tool_fraction_per_question_kind_decides_each_kind_s_traces(builder, samples):
    chosen = samples[:24]
    kinds = {sample.kind for sample in chosen}
    assert "stripes" in kinds and len(kinds) > 1
    fractions = {kind: float(kind == "stripes") for kind in kinds}
    for sample, trace in zip(chosen, teacher_traces(builder, chosen, fractions, seed=0), strict=True):
        assert trace.used_high_res == (sample.kind == "stripes"), sample.kind


def test_a_question_kind_without_a_tool_fraction_is_named(builder, samples):
    with pytest.raises(InputError, match="no entry for question kind") as error:
        teacher_traces(builder, samples[:24], {"stripes": 0.5}, seed=0)
    assert "sample " in str(error.value)


def test_the_base_report_splits_sampled_accuracy_by_whether_the_rollout_asked(
    monkeypatch, model, processor, samples, agent_prompt
):
    """A policy that asks on label questions and answers "horizontal" after the tool, and answers
    colour questions "blue" directly: the report's accuracies are those of each branch."""
    from conftest import SMALL_RESOLUTION, TOOL_TURN, ScriptedEngine, answer_turn, load_prompt
    from visionthink.reward.judges import RuleJudge
    from visionthink.training import pretrain

    def script(request):
        text = processor.tokenizer.decode(request.token_ids)
        if "stripes" in text:
            return answer_turn("horizontal") if len(request.images) == 2 else TOOL_TURN
        return answer_turn("blue")

    monkeypatch.setattr(
        pretrain, "TransformersRolloutEngine", lambda policy, tokenizer, **_: ScriptedEngine(tokenizer, script)
    )
    chosen = [s for s in samples if s.kind in ("colour", "stripes")]
    report = pretrain.perception_report(
        model, processor, load_prompt("general_qa"), agent_prompt, SMALL_RESOLUTION, chosen, RuleJudge(), batch_size=4
    )

    def share(kind, answer):
        return sum(s.answer == answer for s in chosen if s.kind == kind) / sum(s.kind == kind for s in chosen)

    assert report["resize_ratio"] == {"colour": 0.0, "stripes": 1.0}
    assert report["resized"] == {"stripes": share("stripes", "horizontal")}
    assert report["direct"] == {"colour": share("colour", "blue")}
