"""pyproject.toml and environment.yml pin the same stack; the notebooks are committed clean."""

import ast
import json
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

SHARED_PARAMETERS = ("dataset", "normal_class", "data_root", "image_size", "seed",
                     "val_fraction", "device", "run_dir", "download")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(r for r in pip_section if not r.startswith("-e")) == sorted(project)
    assert "torch==2.14.1" in project and "torchvision==0.29.1" in project


def _notebooks():
    found = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert found, "no notebooks found"
    return found


def test_notebooks_are_stripped_and_have_one_parameters_cell():
    for path in _notebooks():
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in code), path.name
        tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"


def test_papermill_documents_every_parameter():
    """Every assignment in a parameters cell is an annotated literal papermill can list."""
    import papermill

    for path in _notebooks():
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        tree = ast.parse("".join(cell["source"]))
        names = []
        for node in tree.body:
            assert isinstance(node, ast.AnnAssign), f"{path.name}: only annotated literals"
            ast.literal_eval(node.value)
            names.append(node.target.id)
        inspected = papermill.inspect_notebook(str(path))
        assert list(inspected) == names, f"{path.name}: papermill cannot parse every line"
        assert all(inspected[n]["help"] for n in names), f"{path.name}: comment every parameter"
        assert names[: len(SHARED_PARAMETERS)] == list(SHARED_PARAMETERS), path.name


def test_every_shipped_parameters_file_names_known_notebooks_and_parameters(tmp_path):
    """A typo in params/*.yaml (a notebook or parameter that does not exist) fails here, not an
    hour into a sweep."""
    from anogan_guide.execution import all_notebooks, plan_parameters, read_params_file

    files = sorted((REPO / "params").glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        common, per_notebook = read_params_file(str(path))
        plans = plan_parameters(all_notebooks(), common, per_notebook, {}, tmp_path)
        assert all(plan["run_dir"] == str(tmp_path) for plan in plans if "run_dir" in plan), path


def test_the_command_line_starts_without_torch_and_the_package_names_load_when_used():
    """`anogan-guide run` and `sweep` only read and write run folders: their modules import
    torch where they use it (3.5 s of every process otherwise); `ag.<name>` still works, and
    the detectors' registry holds every method (rotnet registers in its own module)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import anogan_guide as ag\n"
            "import anogan_guide.cli, anogan_guide.sweep, anogan_guide.results\n"
            "import anogan_guide.engines, anogan_guide.execution, anogan_guide.reproduce\n"
            "print('torch' in sys.modules)\n"
            "print(ag.GanomalyConfig.__name__, ag.open_run.__name__, ag.plots.__name__)\n"
            "print('torch' in sys.modules)\n"
            "try:\n    ag.no_such_name\nexcept AttributeError as err:\n    print(err)\n"
            "print(sorted(set(ag.__all__) - set(dir(ag))))\n"
            # a detector for every method of the sweep, though no method module was imported
            "from anogan_guide import scorers, sweep\n"
            "print(sorted({e for es in sweep.METHOD_ENTRIES.values() for e in es}\n"
            "             - set(scorers.registry())))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.splitlines()
    assert out == ["False", "GanomalyConfig open_run anogan_guide.plots", "True",
                   "module 'anogan_guide' has no attribute 'no_such_name'", "[]", "[]"]


def test_reading_a_notebook_does_not_build_jsonschemas_iri_parser():
    """Every notebook run, sweep job, nbval and book build reads notebooks (nbformat, which
    imports jsonschema). jsonschema 4.24+ imports rfc3987-syntax, which builds a parser at
    import: ~3 s of CPU in each of those processes. pyproject.toml pins jsonschema below it."""
    import subprocess
    import sys

    code = "import sys, papermill, nbformat\nprint('rfc3987_syntax' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout
    assert out == "False\n", "jsonschema imports rfc3987-syntax: pin jsonschema==4.23.0"
