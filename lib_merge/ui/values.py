"""Widget values <-> the core's dataclasses. No gradio here: every callback goes through these.

A control added later (calc mode, elemental, Adjust) adds its name to `MERGE_FIELDS` and its
meaning to `merge_request`/`restore_values`; no host code changes.
"""

from __future__ import annotations

import re

from lib_merge.app.ports import GenSettings
from lib_merge.app.workbench import MergeRequest, SaveRequest
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.methods import METHODS, get_method, names_of_kind
from lib_merge.methods.registry import MethodSpec, ParamSpec
from lib_merge.recipe import parse_vector
from lib_merge.recipe.form import MergeSettings, MethodSettings, build_method_recipe, method_for
from lib_merge.recipe.vectors import format_number

MODES = list(names_of_kind("mode"))


def method_param_field(method: str, param: str) -> str:
    """The form field of one method's parameter: each method's controls have their own default and range."""
    return f"{method}.{param}"


def method_param_controls() -> list[tuple[MethodSpec, ParamSpec]]:
    """Every modern method's parameters, in registry order: the Merge tab makes one control for each."""
    return [(spec, param) for spec in METHODS.values() if spec.kind == "method" for param in spec.params]


METHOD_PARAM_FIELDS = tuple(method_param_field(spec.name, param.name) for spec, param in method_param_controls())
MBW_ARCHS = {"SD1/SD2 (26)": "sd1", "SDXL (20)": "sdxl", "SDXL extended (110)": "sdxl_ext"}
SAVE_DTYPES = ["fp16", "bf16", "fp32", "fp8_e4m3fn", "fp8_e5m2"]
FORMATS = ["safetensors", "ckpt"]

# Order of the merge form's widgets; the Merge, Save and History callbacks all use it.
MERGE_FIELDS = (
    "model_a", "model_b", "model_c", "mode", "calc", "alpha", "beta", "gamma", "seed", "elemental", "filter_mode",
    "filter_text", "adjust", "method", "more_models", *METHOD_PARAM_FIELDS, "rebasin",
    "use_mbw", "mbw_arch", "mbw_sd1", "mbw_sdxl", "mbw_sdxl_ext",
    "use_recipe", "recipe", "template_values",
    "save_name", "save_dtype", "save_format", "save_prune", "save_overwrite", "save_clamp", "save_after",
)  # fmt: skip
# mbw_sd1 / mbw_sdxl / mbw_sdxl_ext stand for 26 / 20 / 110 slider widgets, adjust for 8.
FILTER_MODES = ["Off", "Include", "Exclude"]
TEMPLATE_FIELDS = 8  # fields for a template's open parameters
NO_METHOD = "(mode and calc mode)"
ADJUST_LABELS = ("IN", "OUT", "OUT2", "Contrast", "Brightness", "Cyan-Red", "Magenta-Green", "Yellow-Blue")
GEN_OVERRIDE_FIELDS = (
    "prompt", "negative_prompt", "steps", "sampler", "cfg_scale", "seed", "width", "height", "batch_size",
)  # fmt: skip


def whole_number(value: object, name: str) -> int | None:
    """A seed field's text as an exact whole number (a float would round 2**53 + 1); empty: None."""
    from lib_merge.errors import ParameterError

    text = str(value if value is not None else "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if number.is_integer():
            return int(number)
        raise ParameterError(f"{name} must be a whole number, not {text!r}") from None


def mbw_text(values: list[float]) -> str:
    return ",".join(format_number(v) for v in values)


def save_request(v: dict) -> SaveRequest:
    return SaveRequest(
        name=str(v.get("save_name") or ""),
        dtype=str(v.get("save_dtype") or "fp16"),
        format=str(v.get("save_format") or "safetensors"),
        prune=bool(v.get("save_prune", True)),
        overwrite=bool(v.get("save_overwrite", False)),
        clamp=bool(v.get("save_clamp", False)),
    )


def merge_request(v: dict, always_save: bool = False) -> MergeRequest:
    """The Merge button's inputs as one request; `always_save` for hosts that only write files."""
    schema_id = MBW_ARCHS.get(v.get("mbw_arch"), "sd1")
    mbw_values = [float(x) for x in v.get(f"mbw_{schema_id}") or []]
    ui = {
        "use_mbw": bool(v.get("use_mbw")),
        "mbw_arch": v.get("mbw_arch"),
        "mbw_values": mbw_text(mbw_values),
        "save_after": bool(v.get("save_after")),
    }
    save = save_request(v) if (v.get("save_after") or always_save) else None
    if v.get("use_recipe") and str(v.get("recipe") or "").strip():
        return MergeRequest(recipe=filled_template(str(v["recipe"]), v.get("template_values") or []), save=save, ui=ui)
    if v.get("method") and v["method"] != NO_METHOD:
        return _method_request(v, save, ui)
    mode = v.get("mode") or "weighted_sum"
    if not v.get("model_a") or not v.get("model_b"):
        from lib_merge.errors import ParameterError

        raise ParameterError("choose models A and B")
    calc = v.get("calc") or "normal"
    method = get_method(method_for(mode, calc))
    takes = {p.name for p in method.params}
    filter_mode = v.get("filter_mode") or "Off"
    adjust = [float(x) for x in v.get("adjust") or []]
    seed = whole_number(v.get("seed"), "seed") if ("seed" in takes or v.get("elemental")) else None
    settings = MergeSettings(
        a=v["model_a"],
        b=v["model_b"],
        mode=mode,
        c=(v.get("model_c") or None) if "C" in method.inputs else None,
        alpha=float(v["alpha"]) if v.get("alpha") is not None else None,
        beta=float(v["beta"]) if "beta" in takes and v.get("beta") is not None else None,
        blocks=mbw_text(mbw_values) if v.get("use_mbw") else None,
        calc=calc,
        gamma=float(v["gamma"]) if "gamma" in takes and v.get("gamma") is not None else None,
        seed=seed,
        elemental=str(v.get("elemental") or "").strip() or None,
        include=v.get("filter_text") if filter_mode == "Include" else None,
        exclude=v.get("filter_text") if filter_mode == "Exclude" else None,
        adjust=",".join(format_number(x) for x in adjust) if any(adjust) else None,
        rebasin=bool(v.get("rebasin")),
    )
    return MergeRequest(settings=settings, save=save, ui=ui)


def template_params(text: str) -> list[str]:
    """The open parameters of the recipe box's text, sorted; none when it does not parse."""
    from lib_merge.errors import AlloyError
    from lib_merge.recipe import parse_recipe
    from lib_merge.recipe.nodes import open_params

    try:
        return open_params(parse_recipe(text))
    except AlloyError:
        return []


def filled_template(text: str, values: list) -> str:
    """The recipe with its open parameters filled from the template fields (empty fields stay open)."""
    names = template_params(text)
    if not names:
        return text
    from lib_merge.errors import ParameterError
    from lib_merge.paths import user_data_dir
    from lib_merge.recipe import parse_recipe, print_recipe
    from lib_merge.recipe.compose import compose

    if len(names) > TEMPLATE_FIELDS:
        raise ParameterError(f"the template has {len(names)} parameters; the UI fills {TEMPLATE_FIELDS}: use compose")
    given = {name: str(value).strip() for name, value in zip(names, values, strict=False) if str(value or "").strip()}
    return print_recipe(compose(parse_recipe(text), given, str(user_data_dir() / "recipes")))


def _method_request(v: dict, save, ui: dict) -> MergeRequest:
    """A modern or N-model method: A is the base, then B, C and the further models, in that order."""
    if not v.get("model_a"):
        from lib_merge.errors import ParameterError

        raise ParameterError("choose model A (the base)")
    models = [m for m in [v.get("model_b"), v.get("model_c"), *(v.get("more_models") or [])] if m]
    spec = get_method(v["method"], kind="method")
    params = {}
    for param in spec.params:
        value = v.get(method_param_field(spec.name, param.name))
        if value is not None and not (isinstance(value, str) and not value.strip()):  # empty: the default
            params[param.name] = value
    settings = MethodSettings(v["model_a"], models, spec.name, params, rebasin=bool(v.get("rebasin")))
    build_method_recipe(settings)  # refuse a wrong combination here, before the merge waits for the lock
    return MergeRequest(settings=settings, save=save, ui=ui)


def vector_values(text: str, schema_id: str) -> list[float]:
    """Slider values from a typed vector or a preset name (errors name the bad item).

    The extended SDXL sliders read text the way recipes do (parsed against SDXL, where 110 numbers or
    fine slot names make an extended vector); the VAE is the last slider.
    """
    schema = SCHEMAS[schema_id]
    coarse = next((s for s in SCHEMAS.values() if s.fine == schema_id), schema)
    slots = schema.slots if coarse is schema else schema.names_with_vae()
    parsed = parse_vector(text, coarse, default=0.0)
    if parsed.vector.schema_id != schema.id:
        from lib_merge.errors import BlockVectorError

        raise BlockVectorError(
            f"a vector for {SCHEMAS[parsed.vector.schema_id].label} does not fit the {len(slots)} sliders of "
            f"{schema.label}; choose its schema above, or use it in the recipe box or with --blocks"
        )
    return [parsed.vector.value(schema, slot) for slot in slots]


def _find_title(titles: list[str], wanted: str | None, short: str | None) -> str | None:
    if wanted and wanted in titles:
        return wanted
    if short:
        for t in titles:
            if f"[{short}]" in t:
                return t
    if wanted:
        base = re.sub(r"\s*\[[0-9a-f]+\]$", "", wanted)
        for t in titles:
            if re.sub(r"\s*\[[0-9a-f]+\]$", "", t) == base:
                return t
    return None


def restore_values(settings: dict, models_column: str, titles: list[str]) -> tuple[dict, list[str]]:
    """A history row's settings as widget values; models found by short hash, then by name."""
    shorts = dict(re.findall(r"(\w)=.*? \[([0-9a-f]*)\]", models_column))
    values: dict = {}
    notes: list[str] = []
    for role in ("a", "b", "c"):
        wanted = settings.get(role)
        found = _find_title(titles, wanted, shorts.get(role.upper()))
        values[f"model_{role}"] = found
        if wanted and found is None:
            notes.append(f"model {role.upper()} not found: {wanted}")
    for name in ("mode", "calc", "alpha", "beta", "gamma", "seed", "elemental"):
        if settings.get(name) is not None:
            values[name] = settings[name]
    if values.get("seed") is not None:
        values["seed"] = str(int(values["seed"]))  # the seed field is text: exact beyond 2**53
    for mode in ("include", "exclude"):
        if settings.get(mode):
            values.update(filter_mode=mode.capitalize(), filter_text=settings[mode])
    if settings.get("adjust"):
        numbers = [float(x) if x.strip() else 0.0 for x in str(settings["adjust"]).split(",")]
        values["adjust"] = (numbers + [0.0] * 8)[:8]
    values["use_mbw"] = bool(settings.get("use_mbw") or settings.get("blocks"))
    arch = settings.get("mbw_arch") or "SD1/SD2 (26)"
    values["mbw_arch"] = arch
    text = settings.get("mbw_values") or settings.get("blocks")
    if text:
        schema_id = MBW_ARCHS.get(arch, "sd1")
        try:
            values[f"mbw_{schema_id}"] = vector_values(text, schema_id)
        except Exception as e:  # noqa: BLE001 - an old row must not stop the rest from loading
            notes.append(f"block weights not restored: {e}")
    save = settings.get("save") or {}
    for key in ("name", "dtype", "format", "prune", "overwrite", "clamp"):
        if key in save:
            values[f"save_{key}"] = save[key]
    method = settings.get("method")
    if isinstance(method, dict):
        values["method"] = method.get("method")
        values["model_a"] = _find_title(titles, method.get("a"), shorts.get("A"))
        rest = [_find_title(titles, m, None) for m in method.get("models", [])]
        values["model_b"], values["model_c"] = (rest + [None, None])[:2]
        values["more_models"] = [m for m in rest[2:] if m]
        values.update(_method_param_values(method, notes))
    values["rebasin"] = bool(settings.get("rebasin") or (method.get("rebasin") if isinstance(method, dict) else False))
    values["save_after"] = bool(settings.get("save_after"))
    values["use_recipe"] = False
    return values, notes


def _method_param_values(method: dict, notes: list[str]) -> dict:
    """A history row's method parameters as the values of that method's controls."""
    from lib_merge.errors import AlloyError
    from lib_merge.recipe.form import MethodSettings

    try:
        settings = MethodSettings.from_dict(method)
    except AlloyError as e:
        notes.append(f"method parameters not restored: {e}")
        return {}
    spec = get_method(settings.method, kind="method")
    values = {}
    for name, value in settings.params.items():
        if value is None or not spec.takes(name):
            continue
        values[method_param_field(spec.name, name)] = control_value(spec.param(name), value)
    return values


def control_value(param: ParamSpec, value: object) -> object:
    """A parameter's value as its control shows it: text for whole numbers and lists, else as it is."""
    if isinstance(value, (list, tuple)):
        return ", ".join(format_number(float(v)) for v in value)
    if not (param.integer or param.per_model):
        return value  # sliders, dropdowns and checkboxes take it as it is
    if isinstance(value, (int, float)):
        return str(int(value)) if param.integer else format_number(float(value))
    return str(value)


def gen_overrides(v: dict) -> GenSettings:
    """Alloy's own generation overrides: empty text or 0 means the txt2img value."""

    def number(name, kind):
        raw = v.get(name)
        if raw in (None, "", 0):
            return None
        try:
            return kind(raw)
        except (TypeError, ValueError):
            from lib_merge.errors import ParameterError

            raise ParameterError(f"{name.replace('_', ' ')} must be a number, not {raw!r}") from None

    return GenSettings(
        prompt=v.get("prompt") or None,
        negative_prompt=v.get("negative_prompt") or None,
        steps=number("steps", int),
        sampler=v.get("sampler") or None,
        cfg_scale=number("cfg_scale", float),
        seed=whole_number(v.get("seed"), "seed"),
        width=number("width", int),
        height=number("height", int),
        batch_size=number("batch_size", int),
    )
