"""Teacher-forced traces of the supervised stages (training/sft.py): the tool decision left to
chance, and the restated question the decision token follows."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

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

    from visionthink.training.sft import DECISIONS, VIEW_NOTES

    stripes = [s for s in samples if s.kind == "stripes"][:12]
    assert {s.use_tool for s in stripes} == {True, False}
    flipped = [replace(s, use_tool=not s.use_tool) for s in stripes]
    for mode in ("adaptive", "full"):
        traces = teacher_traces(builder, stripes, 0.5, seed=0, mode=mode, restate_words=4, describe_view=True)
        again = teacher_traces(builder, flipped, 0.5, seed=0, mode=mode, restate_words=4, describe_view=True)
        for sample, trace, other in zip(stripes, traces, again, strict=True):
            note = VIEW_NOTES[bool(sample.use_tool) and mode != "full"]
            # The decision's first token follows the note's last word
            assert trace.turns[0].text.split("\n")[2] + "\n" == note + DECISIONS[note][trace.used_high_res]
            assert trace.used_high_res == other.used_high_res
    assert len({len(builder.processor.tokenizer(note)["input_ids"]) for note in VIEW_NOTES.values()}) == 1
    # Each (note, decision) pair opens with its own token
    first_tokens = {
        builder.processor.tokenizer(text)["input_ids"][0] for by_call in DECISIONS.values() for text in by_call.values()
    }
    assert len(first_tokens) == 4


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
        members = [s for s in chosen if pretrain.report_group(s) == kind]
        return sum(s.answer == answer for s in members) / len(members)

    groups = {pretrain.report_group(s) for s in chosen}
    stripes = {g for g in groups if g.startswith("stripes")}
    assert stripes and "colour/low_res_enough" in groups
    assert report["resize_ratio"] == {g: float(g in stripes) for g in groups}
    assert report["resized"] == {g: share(g, "horizontal") for g in stripes}
    assert report["direct"] == {"colour/low_res_enough": share("colour/low_res_enough", "blue")}
    # No call broke; every call was a resize
    assert report["broken_calls"] == {g: 0.0 for g in groups}
    assert report["tool_calls/resize"] == report["resize_ratio"] and "zoom_on_target" not in report


def test_the_answer_weight_scales_the_answer_tokens_in_the_loss(builder, samples, model):
    """The span the weight applies to is the final answer; the loss with a weight is the weighted
    mean of the trace tokens' negative log-likelihoods."""
    from visionthink.grpo.logprobs import token_logprobs
    from visionthink.models.family import family_of
    from visionthink.training.sft import SFTModule, answer_span

    tokenizer = builder.processor.tokenizer
    chosen = [s for s in samples if not s.use_tool][:6]
    traces = teacher_traces(builder, chosen, 0.5, seed=0, restate_words=4)
    spans = [answer_span(trace, tokenizer) for trace in traces]
    assert [tokenizer.decode(t.token_ids[span]) for t, span in zip(traces, spans, strict=True)] == [
        s.answer for s in chosen
    ]
    ids = family_of(model).special_token_ids(tokenizer)
    module = SFTModule(
        model=None, prompt=builder.prompt, resolution=builder.resolution, optimizer=None, answer_weight=8
    )
    module.policy, module.processor, module.ids, module.builder = model, builder.processor, ids, builder
    module.traces = lambda batch_samples, seed: traces
    loss, _ = module._loss(type("Batch", (), {"samples": chosen})(), seed=0)
    with torch.no_grad():
        logprobs, mask = token_logprobs(model, traces, ids.pad, ids.image)
    total, weight = 0.0, 0.0
    for row, (trace, span) in enumerate(zip(traces, spans, strict=True)):
        for t in range(1, len(trace.token_ids)):
            if trace.loss_mask[t]:
                w = 8.0 if span.start <= t < span.stop else 1.0
                total, weight = total - w * float(logprobs[row, t - 1]), weight + w
    assert mask.sum() > sum(span.stop - span.start for span in spans)
    assert float(loss) == pytest.approx(total / weight, rel=1e-4)


@pytest.fixture(scope="module")
def anywhere(tmp_path_factory):
    """Samples whose label sits in any corner (data.synthetic.label_corner=random)."""
    from visionthink.data import SampleDataset, SyntheticConfig
    from visionthink.data.synthetic import write_synthetic

    root = write_synthetic(
        tmp_path_factory.mktemp("anywhere"), SyntheticConfig(splits={"train": 24}, label_corner="random")
    )
    dataset = SampleDataset(root / "train")
    return [dataset.load(i) for i in range(len(dataset))]


def test_zoom_traces_zoom_on_the_label_wherever_it_is(zoom_builder, anywhere):
    corners = {tuple(s.info["label_box"][:2]) for s in anywhere}
    assert len(corners) >= 3 and all("bottom-right" not in s.question for s in anywhere)
    traces = teacher_traces(zoom_builder, anywhere, tool_fraction=1.0, seed=0, zoom_fraction=1.0)
    zoom = zoom_builder.tools["image_zoom_in_tool"]
    for sample, trace in zip(anywhere, traces, strict=True):
        assert trace.image_sources == ["first_view", "zoom"], trace.turn_texts
        box = zoom.full_resolution_box(trace.turns[0].parsed.arguments["bbox_2d"], (112, 112), (224, 224))
        left, top, right, bottom = sample.info["label_box"]
        # The crop holds the whole label and at most one merged patch (28 px) more per side
        assert box[0] <= left and box[1] <= top and box[2] >= right and box[3] >= bottom
        assert box[2] - box[0] < right - left + 28 and box[3] - box[1] < bottom - top + 28
        assert trace.images[1].image.tobytes() == trace.episode.high_view.image.crop(box).tobytes()
        assert trace.final_answer.answer == sample.answer
    # Half of the calls resize when both tools are offered
    mixed = teacher_traces(zoom_builder, anywhere, tool_fraction=1.0, seed=0, zoom_fraction=0.5)
    sources = [trace.image_sources[1] for trace in mixed]
    assert 0 < sources.count("zoom") < len(sources) and set(sources) == {"zoom", "resize"}


def test_a_zoom_only_prompt_names_the_sample_without_a_label_box(processor, samples):
    from conftest import SMALL_RESOLUTION, load_prompt
    from visionthink.data.sample import SampleError
    from visionthink.episode import EpisodeBuilder

    zoom_only = EpisodeBuilder(processor, load_prompt("agent", "zoom"), SMALL_RESOLUTION)
    boxless = [replace(s, info={}) for s in samples[:2]]
    with pytest.raises(SampleError, match=f"sample {boxless[0].sample_id}: the prompt offers only the zoom tool"):
        teacher_traces(zoom_only, boxless, tool_fraction=1.0, seed=0)


def test_grounding_samples_ask_where_the_label_is_in_the_view_s_coordinates(zoom_builder, anywhere):
    from visionthink.training.sft import GROUNDING_QUESTION, grounding_sample

    zoom = zoom_builder.tools["image_zoom_in_tool"]
    for sample in anywhere[:6]:
        low, full = (grounding_sample(sample, zoom_builder, zoom, mode) for mode in ("low", "full"))
        assert low.question == full.question == GROUNDING_QUESTION and low.kind == "grounding"
        assert low.use_tool is False and low.image is sample.image
        # Pixels of the view shown (Qwen2.5-VL's convention): the 1/4 view's box is half the full one's
        assert json.loads(full.answer) == list(sample.info["label_box"])
        assert json.loads(low.answer) == [v // 2 for v in sample.info["label_box"]]
        # Written as a zoom call writes its box, so the call reuses the answer's tokens
        assert json.dumps({"bbox_2d": json.loads(low.answer)}).endswith(low.answer + "}")
    # Traces of grounding samples answer with the box (and it is trained: it can be seen)
    (trace,) = teacher_traces(zoom_builder, [grounding_sample(anywhere[0], zoom_builder, zoom, "low")], 0.0, seed=0)
    assert trace.final_answer.answer == json.dumps([v // 2 for v in anywhere[0].info["label_box"]])
