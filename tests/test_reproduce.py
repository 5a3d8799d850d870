"""anogan-guide compare: a re-made table row against the committed run folder of the same name."""

from anogan_guide import cli
from anogan_guide.runs import write_json


def _metrics(folder, methods, epochs=15):
    write_json(folder / "metrics.json", {
        "dataset": "folder", "normal_class": "cat", "seed": 0,
        "methods": {m: {"auroc": a, "dev": {"auroc": d}} for m, (a, d) in methods.items()},
        "parameters": {"00_data_prep": {"seed": 0, "data_root": str(folder)},
                       "05b_rotnet": {"epochs": epochs, "run_dir": str(folder)}}})


def test_a_reproduced_row_passes_and_a_different_one_is_named(tmp_path, capsys):
    committed, new = tmp_path / "results", tmp_path / "new"
    _metrics(committed / "folder" / "classcat_seed0", {"rotnet": (0.689, 0.70), "gradcon": (0.6, 0.6)})
    _metrics(new / "folder" / "classcat_seed0", {"rotnet": (0.6935, 0.701)})
    assert cli.main(["compare", str(new), str(committed)]) == 0
    out = capsys.readouterr().out
    assert "folder/classcat_seed0 rotnet: test AUROC 0.6935 vs committed 0.6890" in out
    assert "dev 0.7010 vs 0.7000: ok" in out and "1 of 1 within 0.01" in out
    assert "parameters differ" not in out  # where the data and run folders lie does not count
    _metrics(new / "folder" / "classcat_seed0", {"rotnet": (0.75, 0.70)}, epochs=3)
    assert cli.main(["compare", str(new), str(committed), "--methods", "rotnet"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS by 0.0610" in out and "05b_rotnet epochs 15 -> 3" in out
    assert cli.main(["compare", str(new), str(committed), "--tolerance", "0.1"]) == 0
    capsys.readouterr()


def test_the_f_anogan_entries_are_compared_as_anogan_with_its_notebooks_parameters(tmp_path,
                                                                                    capsys):
    committed, new = tmp_path / "results", tmp_path / "new"
    for folder, terms in ((committed, "anogan"), (new, "l_rot")):
        run = folder / "folder" / "classcat_seed0"
        write_json(run / "metrics.json", {
            "methods": {m: {"auroc": 0.7, "dev": {"auroc": 0.7}} for m in ("anogan", "fanogan")},
            "parameters": {"02_latent_mapping": {"score_terms": terms, "run_dir": str(run)}}})
    assert cli.main(["compare", str(new), str(committed), "--methods", "anogan"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 within 0.01" in out
    assert out.count("02_latent_mapping score_terms anogan -> l_rot") == 2


def test_nothing_to_compare_says_what_to_give(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare", str(tmp_path / "empty"), str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "give the sweep folder" in out
