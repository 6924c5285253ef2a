"""ilf's warnings are said at the user's own line and clear of the progress bar (issue 25: they were attributed
to a frame inside torch/_dynamo and printed glued to the end of diffusers' tqdm bar)."""

import inspect
import sys
import warnings

import pytest
import torch

from ilf import CorrectorConfig, ILFConfig, apply_ilf, remove_ilf
from ilf.tiny import tiny_pipeline

CASES = {
    "corrector": (lambda: CorrectorConfig(num_inference_steps=20), "this corrector was built for 20 steps"),
    "ilf": (lambda: ILFConfig(loop=(1, 3), num_inference_steps=10, t_post="none"), "this feedback runs with 4 steps"),
}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_an_off_schedule_warning_points_at_the_callers_line(mode):
    make, text = CASES[mode]
    pipe = tiny_pipeline("dit")
    apply_ilf(pipe, make())
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        pipe(class_labels=[1], num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    remove_ilf(pipe)
    ours = [w for w in caught if text in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert (ours[0].filename, ours[0].lineno) == (__file__, line)  # this test's call, not torch's or ilf's frame


def test_a_warning_during_a_progress_bar_starts_on_its_own_line(capsys):
    pipe = tiny_pipeline("dit")
    pipe.set_progress_bar_config(disable=False)
    apply_ilf(pipe, CorrectorConfig(num_inference_steps=20))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("always")
        # print as Python does by default (pytest's own capture of warnings would swallow them)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        pipe(class_labels=[1], num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    remove_ilf(pipe)
    err = capsys.readouterr().err
    at = err.index(__file__ + ":")  # warnings' format: FILE:LINE: UserWarning: message
    assert "this corrector was built for 20 steps" in err[at:]
    assert "it/s]" in err[:at] or "%|" in err[:at]  # the bar was drawn before the warning came
    assert err[at - 1] in "\r\n", repr(err[max(0, at - 80):at + 20])  # the bar was cleared first, not appended to


def test_the_user_frame_skips_every_library():
    from ilf.warn import user_frame

    def inner():
        return user_frame()

    assert user_frame().f_code.co_filename == __file__
    assert inner().f_code.co_name == "inner"  # a user function is the user's frame
