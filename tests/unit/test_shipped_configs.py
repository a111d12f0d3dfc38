"""Every YAML shipped in the package composes and validates — found recursively, so a file
added later is covered without touching this test."""

import pytest

from peftstudio.config.compose import ALL_GROUPS, CONF_DIR, read_yaml
from peftstudio.config.validate import load_config

SHIPPED = sorted(p.relative_to(CONF_DIR) for p in CONF_DIR.rglob("*.yaml"))


def test_every_shipped_file_belongs_to_a_known_group():
    assert len(SHIPPED) >= 25
    for relative in SHIPPED:
        assert relative.parts[0] in ALL_GROUPS or str(relative) == "config.yaml", relative


@pytest.mark.parametrize("relative", SHIPPED, ids=str)
def test_shipped_file_composes_and_validates(relative):
    read_yaml(CONF_DIR / relative)  # parses
    if str(relative) == "config.yaml":
        load_config([])
        return
    group, option = relative.parts[0], relative.stem
    selection = f"+experiment={option}" if group == "experiment" else f"{group}={option}"
    needs_path = group == "data" and read_yaml(CONF_DIR / relative)[0].get("path") == "???"
    extra = ["data.path=/tmp/data.jsonl"] if needs_path else []
    config, composition = load_config([selection, *extra])
    assert composition.groups[group] == [option]
    if group == "model":
        assert config.model.architecture is not None, "presets must carry architecture numbers to plan offline"


def test_tiny_preset_describes_the_model_that_is_built():
    from peftstudio.data.embedded import TINY_ARCHITECTURE

    config, _ = load_config(["model=tiny"])
    architecture = config.model.architecture
    assert architecture.model_dump(include=set(TINY_ARCHITECTURE)) == dict(TINY_ARCHITECTURE)
    assert (architecture.model_type, architecture.num_experts, architecture.norms_per_block) == ("llama", 0, None)
