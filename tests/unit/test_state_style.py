"""How a task's state looks in every notebook display (`pmp.notebook.state_style`)."""

from pmp.notebook import state_style
from pmp.notebook.state_style import COLOURS, MEANINGS, STATES


def test_a_badge_is_coloured_by_its_state_and_its_tooltip_says_what_it_means():
    badge = state_style.badge("running")
    assert 'data-state="running"' in badge
    assert f"background: {COLOURS['running']}" in badge
    assert f'title="{MEANINGS["running"]}"' in badge
    assert badge.endswith(">running</span>")


def test_a_badge_escapes_its_words_and_an_unknown_state_looks_failed():
    badge = state_style.badge("lost", text="<gone>", title='a "job"')
    assert "&lt;gone&gt;" in badge
    assert 'title="a &quot;job&quot;"' in badge
    assert f"background: {COLOURS['failed']}" in badge


def test_a_bar_has_a_segment_per_present_state_in_proportion():
    bar = state_style.bar({"done": 3, "failed": 1, "queued": 0})
    assert 'data-bar-state="done"' in bar
    assert "width: 75.000%" in bar
    assert "width: 25.000%" in bar
    assert 'data-bar-state="queued"' not in bar
    assert "data-bar-state" not in state_style.bar({})


def test_the_legend_lists_every_state_in_order_with_its_count():
    legend = state_style.legend({"done": 2})
    positions = [legend.index(f"{state} ") for state in STATES]
    assert positions == sorted(positions)
    assert "done 2" in legend
    assert "queued 0" in legend
    assert "data-state" not in legend  # a display's data-state attributes are its tasks'


def test_a_frame_is_striped_in_its_states_colour():
    assert f"border-left: 4px solid {COLOURS['cancelled']}" in state_style.frame("cancelled")
