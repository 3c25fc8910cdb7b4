"""The PyTorch front door, where users import it from (defined in
:mod:`checks.doors.torch_front`): ``checks.torch.check_function(fn, *inputs)`` and
``checks.torch.check_module(module, x)``."""

from checks.doors.torch_front import check_function, check_module

__all__ = ["check_function", "check_module"]
