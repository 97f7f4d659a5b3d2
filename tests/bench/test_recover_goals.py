"""`bench recover` judges issue 25's low-bit goals on the rows it measured, never on rows it did not run."""

from qcore.bench.recover import goal_rows


def _row(model, config, steps, accuracy):
    return {"model": model, "config": config, "steps": steps, "accuracy": accuracy}


def test_a_named_goal_reads_its_own_row_and_best_reads_the_best_row():
    rows = [_row("fm_mobilenetv2", "W4A8 tensor", [], 0.51), _row("fm_mobilenetv2", "W4A8 tensor", ["cle"], 0.905),
            _row("fm_mobilenetv2", "W4A8 tensor", ["cle", "adaround"], 0.9225),
            _row("fm_mobilenetv2", "W4A8 channel", ["gptq"], 0.99)]  # another config never counts
    goals = {g["goal"]: g for g in goal_rows(rows)}
    assert goals["cle"]["accuracy"] == 0.905 and not goals["cle"]["met"]
    assert goals["best"]["steps"] == ["cle", "adaround"] and goals["best"]["met"]
    assert all(g["model"] == "fm_mobilenetv2" for g in goals.values())  # fm_resnet was not run: no verdict


def test_the_goal_is_inclusive():
    (goal,) = [g for g in goal_rows([_row("fm_resnet", "W4A8 tensor", ["gptq"], 0.933)]) if g["goal"] == "best"]
    assert goal["met"]


def test_a_goal_names_the_settings_of_the_row_it_was_met_on():
    """Two rows of one step list differ by their settings: the verdict says which settings met it."""
    rows = [{**_row("fm_resnet", "W4A8 tensor", ["cle", "brecq"], 0.9313), "combo": "cle,brecq"},
            {**_row("fm_resnet", "W4A8 tensor", ["cle", "brecq"], 0.9331), "combo": "cle,brecq:iters=2000;act_lr=2e-5"}]
    (goal,) = goal_rows(rows)
    assert goal["met"] and goal["combo"] == "cle,brecq:iters=2000;act_lr=2e-5"
