"""The one progress-bar policy (cam_core._progress) and the callers that follow it."""

import io
import sys

import numpy as np
import pytest

from cam_core._progress import check_progress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("bad", [1, "yes", 0.0, [True]])
def test_progress_must_be_none_or_bool(bad):
    with pytest.raises(TypeError, match="`progress` must be None or a bool; got"):
        check_progress(bad)
    with pytest.raises(TypeError, match="`progress`"):
        progress_bar(range(3), progress=bad)


def test_numpy_bool_is_a_bool():
    assert check_progress(np.bool_(True)) is True


@pytest.mark.parametrize("tty", [False, True])
def test_true_shows_and_false_hides_on_any_stream(monkeypatch, tty):
    monkeypatch.setattr(sys, "stderr", _Terminal() if tty else io.StringIO())
    assert not progress_bar(range(3), progress=True, file=io.StringIO()).disable
    assert progress_bar(range(3), progress=False).disable


def test_none_shows_only_on_a_terminal_for_long_work(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar(range(50), progress=None, auto_min=2).disable
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert not progress_bar(range(50), progress=None, auto_min=2, file=io.StringIO()).disable
    assert progress_bar(range(1), progress=None, auto_min=2).disable
    assert progress_bar(total=7, progress=None, auto_min=8).disable
    assert not progress_bar(total=8, progress=None, auto_min=8, file=io.StringIO()).disable


def test_scorecam_follows_the_policy(monkeypatch):
    # a terminal and many chunks: the default shows a bar; progress=False never does
    import cam_core.methods as m

    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    a = np.random.default_rng(0).random((1, 9, 2, 2)).astype(np.float32)
    m.scorecam(a, lambda n, mk: mk.mean((1, 2)), input_size=4, batch_size=1, progress=False)
    assert err.getvalue() == ""
    m.scorecam(a, lambda n, mk: mk.mean((1, 2)), input_size=4, batch_size=1)
    assert "chunk" in err.getvalue()
