"""`explain` reads the schema and the shipped groups."""

from peftstudio.config.explain import explain


def test_explain_a_key_has_type_range_default_and_doc():
    doc = explain("training.micro_batch_size").doc
    assert doc.range_text == "1–1024, or auto" and doc.default == 4
    assert "Effective batch" in explain("training.gradient_accumulation_steps").doc.description
    assert doc.memory_note


def test_explain_a_key_lists_the_groups_that_set_it():
    assert explain("training.num_batches").set_by["training=default"] == 3738


def test_explain_a_group_lists_its_options():
    names = [o.name for o in explain("peft").options]
    assert names == ["dora", "lora", "pissa", "qdora", "qlora", "rslora"]
    assert explain("training").children, "a section also lists its keys"


def test_explain_an_option():
    option = explain("peft=dora").options[0]
    assert option.sets["use_dora"] is True
