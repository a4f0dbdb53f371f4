# Forge keeps most of the A1111 modules Alloy touches (shared, scripts, script_callbacks, ...): those
# come from the A1111 double; the modules Forge changed are here and take precedence.
from pathlib import Path

__path__.append(str(Path(__file__).resolve().parents[2] / "webui_double" / "modules"))
