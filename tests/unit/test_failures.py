"""A failed job's cause at a glance (beamjobs.domain.failures)."""

from beamjobs.domain.failures import Failure, failure_of

BEAM_TRACEBACK = """Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1512, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process
  File "/work/.venv-worker/lib/python3.11/site-packages/apache_beam/transforms/core.py", line 2128, in <lambda>
    wrapper = lambda x: [fn(x)]
                         ^^^^^
  File "/home/ann/pipelines/wordcount.py", line 6, in parse
    raise ValueError(f"cannot parse {word!r}")
  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads
    return _default_decoder.decode(s)
ValueError: cannot parse 'bad' [while running 'Count/Parse']
"""


def test_a_pipelines_traceback_reads_as_its_exception_the_users_frame_and_the_step():
    assert failure_of(BEAM_TRACEBACK) == Failure(
        "ValueError: cannot parse 'bad' [while running 'Count/Parse'] (at wordcount.py:6 in parse)",
        "Count/Parse",
    )


def test_a_cause_that_is_no_traceback_reads_as_its_first_line():
    assert failure_of("worker lost: silent for 31 s\nmore") == Failure(
        "worker lost: silent for 31 s"
    )
    assert failure_of("") == Failure("")


def test_a_traceback_with_no_frame_of_the_users_has_its_exception_alone():
    text = (
        'Traceback (most recent call last):\n  File "apache_beam/x.py", line 1, in f\nKeyError: 1\n'
    )
    assert failure_of(text) == Failure("KeyError: 1")


def test_a_very_long_exception_line_is_cut():
    assert len(failure_of("x" * 5000).summary) == 500
