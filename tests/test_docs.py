"""docs/plugins.md documents every hook with its exact signature, and no hook that is gone."""

import inspect
import re
from pathlib import Path

from rknas import hookspecs

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def hookspec_signatures() -> dict[str, str]:
    """name -> ``name(arg, ...)``: pluggy matches implementations by argument names."""
    return {
        name: f"{name}({', '.join(inspect.signature(f).parameters)})"
        for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(f, "rknas_spec")
    }


def documented_hooks(text: str) -> list[str]:
    """The level-3 headings of the '## Hooks' section, without their backticks."""
    section = re.search(r"^## Hooks\s*$(.*?)(?=^## )", text, re.M | re.S)
    assert section, "docs/plugins.md has no '## Hooks' section"
    return [h.strip().strip("`").strip() for h in re.findall(r"^### (.+)$", section.group(1), re.M)]


def test_every_hookspec_is_documented_with_its_exact_signature():
    specs = hookspec_signatures()
    assert "register_stage_strategies" in specs
    documented = documented_hooks(GUIDE.read_text(encoding="utf-8"))
    missing = sorted(sig for sig in specs.values() if sig not in documented)
    assert not missing, f"docs/plugins.md lacks a '### `signature`' heading for: {missing}"
    stale = sorted(h for h in documented if h not in specs.values())
    assert not stale, f"docs/plugins.md documents hooks that rknas/hookspecs.py does not define: {stale}"


def test_guide_covers_the_contract_and_the_environment_variable():
    text = GUIDE.read_text(encoding="utf-8")
    for needle in ("out_channels", "post_channels", "min_stages", "builder(channels, stages, width, dropout)",
                   "RKNAS_PLUGINS", "PluginError", "build_stage", "exits with status 2"):
        assert needle in text, needle
