"""Fault injection is an argument: the text form a subprocess gets reads back to the same faults."""

import pytest

from peftstudio.errors import UserError
from peftstudio.train.faults import Faults


def test_fault_specs_read_back_what_they_write():
    faults = Faults.parse("kill_at_step=7,inf_weights=3")
    assert faults == Faults(kill_at_step=7, inf_weights=3) and Faults.parse(str(faults)) == faults
    assert faults.as_arguments() == ["--inject-fault", "kill_at_step=7,inf_weights=3"]
    assert not Faults.parse(None) and Faults().as_arguments() == [] and Faults().callbacks() == []
    assert [type(c).__name__ for c in faults.callbacks()] == ["KillAtStep", "InfWeightsAtStep"]


@pytest.mark.parametrize("text", ["kill_at_step:7", "kill_at_step=", "explode=3", "kill_at_step=0", "inf_weights=x"])
def test_a_malformed_fault_spec_is_a_user_error(text):
    with pytest.raises(UserError, match="--inject-fault"):
        Faults.parse(text)
