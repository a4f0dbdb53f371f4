"""Exceptions with messages meant for people.

Each class carries its CLI exit code (the README's table), so the command line, the UI and
the HTTP API can all report an error the same way without a lookup table.
"""

from __future__ import annotations


class AlloyError(Exception):
    """Base of every error Alloy reports to a person."""

    exit_code = 1


class _RecipeProblem(AlloyError):
    exit_code = 3


class _InputProblem(AlloyError):
    exit_code = 4


class _OutputProblem(AlloyError):
    exit_code = 5


class CorruptModelError(_InputProblem):
    pass


class UnsafePickleError(_InputProblem):
    pass


class ArchMismatchError(_InputProblem):
    pass


class ShapeMismatchError(_InputProblem):
    pass


class ModelNotFoundError(_InputProblem):
    pass


class ModelHashMismatchError(_InputProblem):
    pass


class SourceChangedError(_InputProblem):
    pass


class UnsupportedFormatError(_InputProblem):
    """A file in a format Alloy does not read (GGUF, bitsandbytes NF4/FP4): refused at open by name."""


class RecipeError(_RecipeProblem):
    pass


class RecipeSyntaxError(RecipeError):
    pass


class RecipeTypeError(RecipeError):
    pass


class BlockSchemaError(_RecipeProblem):
    pass


class BlockVectorError(_RecipeProblem):
    pass


class PresetError(_RecipeProblem):
    pass


class InvalidComboError(_RecipeProblem):
    pass


class ParameterError(_RecipeProblem):
    pass


class UnsupportedError(_RecipeProblem):
    pass


class DiskFullError(_OutputProblem):
    pass


class UnsafePathError(_OutputProblem):
    pass


class UnsafeNameError(_OutputProblem):
    pass


class OutputExistsError(_OutputProblem):
    """An output exists and replacing it was not asked for. The message ends with "choose another
    name"; each surface adds its own way to ask for replacing (`OVERWRITE_HINTS`)."""


# How to ask for replacing an existing file, in each surface's words.
OVERWRITE_HINTS = {"cli": "use --overwrite", "http": 'set "overwrite": true', "ui": "tick the overwrite box"}


# How to ask for clamping values beyond an fp8 output's range, in each surface's words.
CLAMP_HINTS = {"cli": "use --clamp", "http": 'set "clamp": true in "save"', "ui": "tick the fp8 clamp box"}


def message_for(e: BaseException, surface: str) -> str:
    """The one line a person reads for an error, in the words of `surface` ("cli", "http", "ui")."""
    if isinstance(e, OutputExistsError):
        return f"{e} or {OVERWRITE_HINTS[surface]}"
    if isinstance(e, Fp8RangeError):
        return f"{e}; {CLAMP_HINTS[surface]} to clamp them, or choose a wider dtype"
    return str(e)


class NonFiniteError(AlloyError):
    exit_code = 6


class Cancelled(AlloyError):
    exit_code = 130


class HostPatchError(AlloyError):
    exit_code = 4


class BusyError(AlloyError):
    """Another merge holds the live model and the caller asked not to wait."""


class ElementalSyntaxError(RecipeError):
    """An elemental entry that does not read as Blocks:Elements:Ratio, or names an unknown block."""


class MechaImportError(RecipeError):
    """A .mecha recipe outside the subset Alloy reads."""


class PlanError(_RecipeProblem):
    """An XYZ plan that cannot run: the message names the axis and the offending item."""


class HistoryError(_OutputProblem):
    """The history file cannot be read or written (a merge that succeeded still stands)."""


class LoraFormatError(_InputProblem):
    """A LoRA file whose keys or shapes are no LoRA format Alloy reads."""


class LoraMismatchError(_InputProblem):
    """A LoRA made for another base: too many of its modules have no target in the checkpoint."""


class PrecisionError(_InputProblem):
    """Values that the chosen output dtype cannot hold (fp16 tops out at 65504)."""


class Fp8RangeError(PrecisionError):
    """Values beyond an fp8 output's range (or NaN/Inf) as a key is cast for writing. The message names the
    key; each surface adds its own way to ask for clamping (`CLAMP_HINTS`)."""


class SelfCheckError(AlloyError):
    """A re-basin permutation group changed what the network computes: re-basin refuses to run."""
