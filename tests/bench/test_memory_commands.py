"""`bench memory --commands` names what it measures: a misspelt command is refused, not dropped."""

import pytest

from qcore.bench import main


def test_an_unknown_command_is_refused_with_the_known_names(capsys, monkeypatch):
    import qcore.bench.memory as memory

    monkeypatch.setattr(memory, "bench_memory", lambda *a, **k: pytest.fail("ran with an unknown command"))
    with pytest.raises(SystemExit) as end:
        main(["memory", "--commands", "recover:gptq,recover:cle_bc", "--images", "8"])
    assert end.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command(s) recover:cle_bc" in err and "recover:cle+bias_correction" in err


def test_a_family_name_selects_its_runs(monkeypatch):
    import qcore.bench.memory as memory

    asked = {}
    monkeypatch.setattr(memory, "bench_memory", lambda model, images, commands, *a, **k: asked.update(c=commands) or {})
    main(["memory", "--commands", "recover,deploy", "--images", "8"])
    assert asked["c"] == ("recover:cle+bias_correction", "recover:adaround", "recover:gptq", "recover:brecq", "deploy")
