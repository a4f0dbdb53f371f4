# Neo keeps Forge's modules (and through them the A1111 double's) except the ones here.
from pathlib import Path

_tests = Path(__file__).resolve().parents[2]
__path__.append(str(_tests / "forge_double" / "modules"))
__path__.append(str(_tests / "webui_double" / "modules"))
