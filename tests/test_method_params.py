"""A method's parameters come from its declaration alone: the CLI (--param NAME=VALUE and --NAME VALUE), the
HTTP body ("params"), the Merge tab's controls and XYZ axes reach every declared parameter (TIES's sign,
DELLA's elect, geometric median's eps and max_iter, n_average's weights) and refuse anything else before a
file is read, naming the method's parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import load
from test_cli import cli
from test_modern import elect, run, trim

from lib_merge.methods import METHODS


@pytest.fixture(scope="module")
def three(sd1_fp32):
    return list(sd1_fp32)


def _cli_merge(paths, out, *flags):
    base, *rest = paths
    return cli("merge", "--a", base, "--models", *rest, *flags, "-o", out, "--dtype", "fp32", "--no-history")


def test_every_declared_parameter_is_a_flag_and_equals_the_recipe(three, tmp_path):
    a, b, c = three
    by_param = _cli_merge([a, b, c], tmp_path / "p.safetensors", "--method", "ties", "--param", "density=0.3",
                          "--param", "sign=count")  # fmt: skip
    by_flag = _cli_merge([a, b, c], tmp_path / "f.safetensors", "--method", "ties", "--density", "0.3",
                         "--sign=count")  # fmt: skip
    assert by_param.returncode == 0 and by_flag.returncode == 0, by_param.stderr + by_flag.stderr
    assert by_param.stdout.splitlines()[-2] == by_flag.stdout.splitlines()[-2]  # the same recipe hash
    got = load(tmp_path / "p.safetensors")
    assert all(torch.equal(t, w) for t, w in zip(got.values(), load(tmp_path / "f.safetensors").values(), strict=True))
    models = [load(p) for p in (a, b, c)]
    key = next(k for k, t in models[0].items() if t.dim() == 2 and t.numel() > 16)
    base = models[0][key].double().numpy()
    deltas = [trim(m[key].double().numpy() - base, 0.3) for m in models[1:]]
    expected = base + elect(deltas, "count")  # the reference: TIES with density 0.3 and the sign by count
    assert np.allclose(got[key].double().numpy(), expected, atol=1e-5)
    assert not np.allclose(expected, base + elect(deltas, "sum"), atol=1e-5)  # the sign choice matters here


def test_n_average_weights_and_geometric_median_iterations_from_flags(three, tmp_path):
    a, b, c = three
    weighted = _cli_merge([a, b, c], tmp_path / "w.safetensors", "--method", "n_average", "--weights", "1,0,3")
    assert weighted.returncode == 0, weighted.stderr
    models = [load(p) for p in (a, b, c)]
    got = load(tmp_path / "w.safetensors")
    for key, tensor in got.items():
        expected = (models[0][key].double() + 3 * models[2][key].double()) / 4
        assert torch.allclose(tensor.double(), expected, atol=1e-6), key
    short = _cli_merge([a, b, c], tmp_path / "g.safetensors", "--method", "geometric_median", "--max-iter", "1",
                       "--eps=0.5")  # fmt: skip
    assert short.returncode == 0, short.stderr
    reference = run("geometric_median", [a, b, c], tmp_path, "gm", max_iter=1, eps=0.5)
    assert all(torch.equal(t, reference[k]) for k, t in load(tmp_path / "g.safetensors").items())
    default = run("geometric_median", [a, b, c], tmp_path, "gm_default")
    assert any(not torch.equal(t, default[k]) for k, t in reference.items())  # max_iter took effect


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "ties", "--densty", "0.3"],
         "ties() has no parameter 'densty'; parameters: alpha (1), density (0.5, 0 to 1), sign (sum | count | mean)"),
        (["--method", "ties", "--sign", "most"], "ties() parameter 'sign' must be one of sum, count, mean, got 'most'"),
        (["--method", "ties", "--density", "2"], "ties(): density must lie in [0.0, 1.0], not 2.0"),
        (["--method", "della", "--elect", "maybe"], "della() parameter 'elect' must be true or false, got 'maybe'"),
        (["--method", "geometric_median", "--max-iter", "2.5"],
         "geometric_median() parameter 'max_iter' must be a whole number, got 2.5"),
        (["--method", "n_average", "--weights", "1,2"],
         "n_average() parameter 'weights' takes one number per model (3), got [1, 2]"),
        (["--method", "geometric_median", "--alpha", "0.5"], "geometric_median() has no parameter 'alpha'"),
        (["--mode", "weighted_sum", "--density", "0.3"], "unrecognized arguments: --density"),
    ],
)  # fmt: skip
def test_a_wrong_parameter_is_one_line_before_any_file_is_read(tmp_path, flags, message):
    missing = [tmp_path / "no_a.safetensors", tmp_path / "no_b.safetensors", tmp_path / "no_c.safetensors"]
    if "--mode" in flags:
        done = cli("merge", "--a", missing[0], "--b", missing[1], *flags, "-o", tmp_path / "o.safetensors")
    else:
        done = _cli_merge(missing, tmp_path / "o.safetensors", *flags)
    assert done.returncode in (2, 3), done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "not found" not in done.stderr  # refused before the models were looked at


def test_the_merge_tab_has_each_methods_own_controls_with_its_defaults(tmp_path, sd1):
    import gradio as gr

    from lib_merge.app.workbench import Workbench
    from lib_merge.host.folder import FolderHost
    from lib_merge.ui.app import build_ui

    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    controls = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    for spec in (s for s in METHODS.values() if s.kind == "method"):
        for param in spec.params:
            control = controls[f"alloy_{spec.name}_{param.name}"]
            if isinstance(control, gr.Slider):
                assert control.value == param.default and (control.minimum, control.maximum) == param.slider_range
            elif isinstance(control, gr.Dropdown):
                assert (
                    control.value == param.default
                    and tuple(c if isinstance(c, str) else c[0] for c in control.choices) == param.choices
                )
    assert controls["alloy_ties_alpha"].value == 1.0 and controls["alloy_slerp_alpha"].value == 0.5
    # The WebUI keeps values in ui-config.json by label: a method's control shares its label with nothing else.
    labels = [getattr(b, "label", None) for b in demo.blocks.values() if getattr(b, "label", None)]
    for spec in (s for s in METHODS.values() if s.kind == "method"):
        for param in spec.params:
            assert labels.count(controls[f"alloy_{spec.name}_{param.name}"].label) == 1
    assert controls["alloy_geometric_median_max_iter"].value == "100"


def test_an_xyz_plan_sweeps_any_declared_parameter_of_a_method():
    from lib_merge.app.plots.plan import PlanContext, XYZPlan, expand
    from lib_merge.arch.blocks import SCHEMAS
    from lib_merge.recipe import print_recipe
    from lib_merge.recipe.form import MethodSettings, build_method_recipe

    merge = {"method": "ties", "a": "a.safetensors", "models": ["b.safetensors", "c.safetensors"],
             "params": {"alpha": 0.9}}  # fmt: skip
    plan = XYZPlan.from_dict({"x": {"type": "param:sign", "values": "sum, count"},
                              "y": {"type": "param:density", "values": "0.2-0.4 (2)"}, "merge": merge})  # fmt: skip
    cells = expand(plan, PlanContext(SCHEMAS["sd1"]))
    assert [c.labels[:2] for c in cells] == [("sum", "0.2"), ("count", "0.2"), ("sum", "0.4"), ("count", "0.4")]
    for cell in cells:
        sign, density = cell.labels[0], float(cell.labels[1])
        form = MethodSettings("a.safetensors", ["b.safetensors", "c.safetensors"], "ties",
                              {"alpha": 0.9, "sign": sign, "density": density})  # fmt: skip
        assert print_recipe(cell.root) == print_recipe(build_method_recipe(form))
    # a method's parameter beside the other fields (the form before "params") reads the same
    median = {"method": "geometric_median", "a": "a.safetensors", "models": ["b.safetensors"], "eps": 0.01}
    again = expand(XYZPlan.from_dict({"x": {"type": "param:max_iter", "values": "1, 5"}, "merge": median}),
                   PlanContext(SCHEMAS["sd1"]))  # fmt: skip
    texts = [print_recipe(c.root) for c in again]
    assert "eps=0.01, max_iter=1)" in texts[0] and "eps=0.01, max_iter=5)" in texts[1]


@pytest.mark.parametrize(
    ("x", "merge", "message"),
    [
        (("param:nope", "1"), None, "unknown parameter 'nope' for a param: axis; parameters: alpha"),
        (("param:density", "0.3"), None, "weighted_sum has no parameter 'density'"),
        (("param:sign", "most"), "ties", "ties() parameter 'sign' must be one of sum, count, mean, got 'most'"),
        (("param:density", "1.5"), "ties", "ties(): density must lie in [0.0, 1.0], not 1.5"),
        (("alpha", "0.5"), "ties", "the plot merges with ties: use param:NAME"),
    ],
)
def test_a_wrong_parameter_axis_is_a_plan_error_before_any_work(x, merge, message):
    from lib_merge.app.plots.plan import PlanContext, XYZPlan, expand
    from lib_merge.arch.blocks import SCHEMAS
    from lib_merge.errors import PlanError

    form = {"a": "a.safetensors", "b": "b.safetensors"}
    if merge:
        form = {"method": merge, "a": "a.safetensors", "models": ["b.safetensors", "c.safetensors"]}
    with pytest.raises(PlanError) as error:
        expand(XYZPlan.from_dict({"x": {"type": x[0], "values": x[1]}, "merge": form}), PlanContext(SCHEMAS["sd1"]))
    assert message in str(error.value)


def test_a_param_axis_plot_on_the_webui_merges_each_cell_like_a_plain_merge(webui):
    from test_xyz_host import GEN, run_plot

    from lib_merge.app.plots.plan import XYZPlan
    from lib_merge.app.ports import GenSettings
    from lib_merge.app.requests import MergeRequest
    from lib_merge.recipe.form import MethodSettings

    models = [webui.title("model_b"), webui.title("model_c")]
    merge = {"method": "dare", "a": webui.title("model_a"), "models": models, "params": {"seed": 3}}
    plan = XYZPlan.from_dict({"x": {"type": "param:p", "values": "0.1, 0.6"}, "merge": merge, "gen": dict(GEN)})
    out = run_plot(webui.workbench, plan)
    assert out.merges == 2 and len(out.results) == 2
    webui.workbench.restore()
    plain = MethodSettings(webui.title("model_a"), models, "dare", {"seed": 3, "p": 0.6})
    webui.workbench.merge(MergeRequest(settings=plain))
    image = webui.workbench.generate(webui.host.base_settings().overlay(GenSettings(**GEN))).images[0]
    seed = out.results[1].cell.gen.seed
    image = webui.workbench.generate(webui.host.base_settings().overlay(GenSettings(**GEN, seed=seed))).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(out.results[1].images[0]))
    assert not np.array_equal(np.asarray(out.results[0].images[0]), np.asarray(out.results[1].images[0]))


# Files that may name a method's parameter or calc mode as text, and why.
_NAMING_ALLOWED = {
    "recipe/mecha.py": "sd-mecha's recipe names translated to ours",
    "arch/detect.py": "the prediction type 'epsilon'",
    "arch/modelspec.py": "the prediction type 'epsilon'",
    "lora/merge.py": "the prediction type 'epsilon'",
    "lora/write.py": "the prediction type 'epsilon'",
}


def test_outside_the_methods_no_module_names_a_methods_parameter_or_calc_mode():
    import ast
    from pathlib import Path

    import lib_merge

    mode_params = {p.name for s in METHODS.values() if s.kind in ("mode", "calc") for p in s.params}
    names = {p.name for s in METHODS.values() if s.kind == "method" for p in s.params} - mode_params
    names |= {calc for s in METHODS.values() for calc, _ in s.calc_modes} | {a for s in METHODS.values()
                                                                           for a, _ in s.calc_aliases}  # fmt: skip
    names -= {"p", "random", "self", "extract", "tensor"}  # words too common to scan for
    assert {"density", "sign", "elect", "eps", "max_iter", "weights", "trainDifference", "tensor2"} <= names
    root = Path(lib_merge.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root).as_posix()
        if where.startswith("methods/") or where in _NAMING_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
            named = node.attr if isinstance(node, ast.Attribute) else named
            if named in names:
                found.append(f"{where}:{node.lineno} {named!r}")
    assert found == []
