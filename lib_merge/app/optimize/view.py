"""What the Optimize tab shows of a study, without gradio: the trials table, the progress line, the chart
of score per trial with the best-so-far line, the parameters' importance and the best trials' images."""

from __future__ import annotations

import json
import os

from PIL import Image, ImageDraw

from lib_merge.app.optimize.request import trial_folder

IMPORTANCE_COLUMNS = ["input", "importance"]
TRIAL_COLUMNS = ["trial", "state", "score", "params", "merge s", "generate s", "score s", "history id", "instance"]


def trial_rows(status: dict) -> list[list]:
    rows = []
    for t in status.get("trials", []):
        times = t.get("times") or {}
        values = t.get("values")
        score = ", ".join(f"{v:.4g}" for v in values) if values else ""
        rows.append([t["number"], t["state"], score, json.dumps(t["params"], sort_keys=True),
                     times.get("merge"), times.get("generate"), times.get("score"), t.get("history_id"),
                     t.get("instance") or ""])  # fmt: skip
    return rows


def progress_text(status: dict) -> str:
    """ "Trial 5/12 · ETA 0:41 · best 0.612 (trial 3)" and the study's state, warnings and report verdict."""
    parts = [f"**{status['study']}**: {status['state']}"]
    progress = status.get("progress") or {}
    if progress.get("planned"):
        parts.append(f"trial {progress['done']}/{progress['planned']} of this run")
    if progress.get("eta_seconds") is not None and status["state"] == "running":
        minutes, seconds = divmod(int(progress["eta_seconds"]), 60)
        parts.append(f"ETA {minutes}:{seconds:02d}")
    finished = [t for t in status.get("trials", []) if t["state"] == "COMPLETE"]
    best = next((t for t in finished if status.get("best") and t["number"] == status["best"][0]), None)
    if best is not None:  # the front may name a trial the snapshot still shows running
        parts.append(f"best {', '.join(f'{v:.4g}' for v in best['values'])} (trial {best['number']})")
    lines = [" · ".join(parts)]
    if status.get("error"):
        lines.append(f"**Error:** {status['error']}")
    lines += [f"Warning: {w}" for w in status.get("warnings", [])]
    report = status.get("report") or {}
    for scorer, entry in (report.get("objectives") or {}).items():
        lines.append(f"Held-out seeds, {scorer}: {_holdout_line(entry)}")
    return "\n\n".join(lines)


def _holdout_line(entry: dict) -> str:
    """Best, A and B with their intervals, and the verdict (none from one image per model)."""
    figures = []
    for model in ("best", "A", "B"):
        if model in entry:
            e = entry[model]
            figures.append(f"{model} {e['mean']:.4g} [{e['low']:.4g}, {e['high']:.4g}]")
    others = " and ".join(m for m in ("A", "B") if m in entry)
    if entry["best"]["images"] < 2:
        verdict = "one image per model gives no verdict (add held-out seeds)"
    elif entry.get("beats_both"):
        verdict = f"the best trial beats {others}"
    else:
        verdict = f"the best trial does not beat {others} beyond doubt"
    return ", ".join(figures) + f": {verdict}."


def score_chart(status: dict, path: str, size: tuple[int, int] = (640, 320)) -> str | None:
    """Score per trial (dots) and the best so far (a line), first objective; None before any finished trial."""
    points = [(t["number"], t["values"][0]) for t in status.get("trials", []) if t["state"] == "COMPLETE"]
    if not points:
        return None
    maximize = _maximizing(status)
    width, height = size
    margin = 32
    low, high = min(v for _, v in points), max(v for _, v in points)
    span = (high - low) or 1.0
    last = max(n for n, _ in points) or 1

    def xy(number: float, value: float) -> tuple[float, float]:
        return (
            margin + (width - 2 * margin) * number / last,
            height - margin - (height - 2 * margin) * (value - low) / span,
        )

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, margin, width - margin, height - margin], outline=(180, 180, 180))
    best, line = None, []
    for number, value in points:
        best = value if best is None or (value > best if maximize else value < best) else best
        line.append(xy(number, best))
        x, y = xy(number, value)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(60, 110, 200))
    if len(line) > 1:
        draw.line(line, fill=(220, 90, 40), width=2)
    # Under the plot: the image's own label covers its top-left corner in the tab.
    legend = f"score per trial (dots), best so far (line); {high:.4g} top, {low:.4g} bottom"
    draw.text((margin, height - margin + 10), legend, fill=(0, 0, 0))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)
    return path


def importance_rows(study) -> list[list]:
    """Optuna's parameter importances for the first objective, once two trials have finished."""
    import optuna

    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(finished) < 2 or len({json.dumps(t.params, sort_keys=True) for t in finished}) < 2:
        return []
    try:
        # Optuna's default evaluator (PED-ANOVA; fANOVA would need scikit-learn) ranks what makes the target
        # low: a maximised objective is turned round.
        sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
        found = optuna.importance.get_param_importances(study, target=lambda t: sign * t.values[0])
    except (RuntimeError, ValueError):
        return []
    return [[name, round(value, 4)] for name, value in found.items()]


def best_images(status: dict, folder: str, count: int = 4) -> list[tuple[str, str]]:
    """The first image of the best trials, with their score and parameters as captions."""
    finished = [t for t in status.get("trials", []) if t["state"] == "COMPLETE"]
    finished.sort(key=lambda t: t["values"][0], reverse=_maximizing(status))
    shown = []
    for t in finished[:count]:
        images = trial_folder(folder, t["number"])
        names = sorted(os.listdir(images)) if os.path.isdir(images) else []
        if names:
            caption = f"trial {t['number']}: {t['values'][0]:.4g} " + json.dumps(t["params"], sort_keys=True)
            shown.append((os.path.join(images, names[0]), caption))
    return shown


def _maximizing(status: dict) -> bool:
    """Whether the study's first objective is maximised."""
    return (status.get("directions") or ["maximize"])[0] != "minimize"
