"""The pseudo-code compulsory check: what passes, what is normalised, and every rejection."""

import json

import pytest

from chat_server import fine_answer
from processors.llm.fine_check import check_fine_answer, format_steps, render_answer, steps_from_json

GOOD = (
    "<step 1: standing>The person stands upright.</step 1: standing> "
    "<step 2: taking a step>The left foot moves forward 40 cm.</step 2: taking a step> "
    "<step 3: stopping>Both feet rest side by side.</step 3: stopping>\n"
    "<step 1: standing>stand(upright, arms down)</step 1: standing> "
    "<step 2: taking a step>take_step(lift left foot, step forward)</step 2: taking a step> "
    "<step 3: stopping>stop(feet together)</step 3: stopping>"
)


def test_a_good_answer_gives_its_steps():
    result = check_fine_answer(GOOD)
    assert result.ok and result.reasons == []
    assert [(s.index, s.title) for s in result.steps] == [(1, "standing"), (2, "taking a step"), (3, "stopping")]
    assert result.steps[1].description == "The left foot moves forward 40 cm."
    assert result.steps[1].pseudo_code == "take_step(lift left foot, step forward)"
    assert format_steps(result.steps).startswith("<step 1: standing>The person stands upright.</step 1: standing> <step 2:")


@pytest.mark.parametrize("slip", [
    GOOD.replace("</step 2: taking a step>", "</step 2:taking a step>"),  # no space after the colon
    GOOD.replace("</step 3: stopping>\n", "<step 3: stopping>\n"),  # a closing tag without '/'
    GOOD.replace("<step 1: standing>", "< Step 1 :  Standing >"),  # spacing and case
])
def test_published_tag_slips_are_normalised(slip):
    assert check_fine_answer(slip).ok, check_fine_answer(slip).reasons


@pytest.mark.parametrize("broken,reason", [
    (GOOD.replace("</step 3: stopping>\n", "\n", 1), "closed by"),
    (GOOD.replace("</step 2: taking a step> <step 3", "</step 2: stepping> <step 3", 1), "closed by"),
    (GOOD.split("\n")[0], "expected 2 paragraphs"),
    (GOOD.replace("<step 3: stopping>Both", "<step 4: stopping>Both").replace("</step 3: stopping>\n", "</step 4: stopping>\n"),
     "numbered [1, 2, 4]"),
    (GOOD.rsplit(" <step 3", 1)[0], "the description has 3 steps but the pseudo-code 2"),
    (GOOD.replace("<step 3: stopping>stop(feet together)</step 3: stopping>", "<step 3: halting>stop(feet together)</step 3: halting>"),
     "titles of the description and the pseudo-code differ"),
    (GOOD.replace("stop(feet together)", "stop feet together"), "not of the form name(arguments)"),
    (GOOD.replace("stop(feet together)", "3stop(feet)"), "not of the form name(arguments)"),
    (GOOD.replace("stop(feet together)", "stop( )"), "with no arguments"),
    (GOOD.replace("Both feet rest side by side.", " "), "empty description"),
    (GOOD.replace("moves forward", "contracts the quadriceps muscles and moves forward"), "mentions muscles"),
    ("no tags at all", "no <step N: title>"),
])
def test_inconsistent_answers_are_rejected_with_the_reason(broken, reason):
    result = check_fine_answer(broken)
    assert not result.ok
    assert any(reason in r for r in result.reasons), result.reasons


def test_step_count_bounds_are_configurable():
    assert not check_fine_answer(GOOD, min_steps=4, max_steps=6).ok
    assert "3 steps; expected 4 to 6" in check_fine_answer(GOOD, min_steps=4, max_steps=6).reasons
    assert check_fine_answer(fine_answer("a man walks", steps=5), min_steps=2, max_steps=5).ok


STEPS = [{"title": "standing", "description": "The person stands upright.", "pseudo_code": "stand(upright)"},
         {"title": "stepping", "description": "The left foot moves forward.", "pseudo_code": "step(left foot)"}]


@pytest.mark.parametrize("change", [
    {}, {"title": ""}, {"description": ""}, {"pseudo_code": "step left"}, {"pseudo_code": "step()"},
    {"description": "The calf muscles tense."}, {"title": "  a  title  "},
])
def test_the_json_form_is_checked_as_the_paragraphs_it_renders_to(change):
    answer = json.dumps({"steps": [STEPS[0], {**STEPS[1], **change}]})
    steps, problems = steps_from_json(answer)
    assert problems == []
    direct, rendered = check_fine_answer(answer), check_fine_answer(render_answer(steps))
    assert (direct.ok, direct.reasons, direct.steps) == (rendered.ok, rendered.reasons, rendered.steps)
    assert direct.ok == (change == {} or "title" in change and change["title"].strip() != "")


def test_json_answers_with_tags_inside_or_missing_fields_fail():
    tagged = json.dumps({"steps": [STEPS[0], {**STEPS[1], "description": "moves </step 1: standing> on"}]})
    assert not check_fine_answer(tagged).ok
    missing = check_fine_answer(json.dumps({"steps": [STEPS[0], {"title": "x", "description": "y"}]}))
    assert not missing.ok and "step 2 has no pseudo_code text" in missing.reasons
    assert check_fine_answer('{"steps": []}').reasons == [
        'the answer is not an object {"steps": [...]} with a non-empty list of steps']
    assert "not JSON" in check_fine_answer('{"steps": [').reasons[0]
    assert check_fine_answer("```json\n" + json.dumps({"steps": STEPS}) + "\n```").ok
    assert [s.title for s in check_fine_answer(json.dumps(STEPS)).steps] == ["standing", "stepping"]  # a bare list
