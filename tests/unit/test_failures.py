"""A failed job's cause at a glance (beamjobs.domain.failures)."""

from beamjobs.domain.failures import Failure, condensed, failure_of

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


# As a LOOPBACK harness's failure reaches the worker: FnApiRunner's RuntimeError, under the
# worker's frames, carrying the harness's text: the user's exception, then Beam's re-raise of it
# with the step's name, through Beam's frames.
_USERS = """Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1512, in apache_beam.runners.common.DoFnRunner.process
  File "/home/ann/count.py", line 4, in parse
    raise ValueError(f"not a number: {w!r}")
ValueError: not a number: 'two'"""
_RERAISED = """Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/apache_beam/runners/worker/sdk_worker.py", line 310, in _execute
    response = task()
  File "apache_beam/runners/common.py", line 1602, in apache_beam.runners.common.DoFnRunner._reraise_augmented
  File "/home/ann/count.py", line 4, in parse
    raise ValueError(f"not a number: {w!r}")
ValueError: not a number: 'two' [while running 'Parse']"""
_DURING = "\n\nDuring handling of the above exception, another exception occurred:\n\n"
_WORKERS = """Traceback (most recent call last):
  File "/work/layers/beamjobs/worker/run.py", line 177, in execute
    result = runner.run_via_runner_api(pipeline, beam_options)
  File "/venv/lib/python3.11/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 1395, in process_bundle
    raise RuntimeError(result.error)
RuntimeError: """
_ONCE = _USERS.rsplit("\n", 1)[0] + "\nValueError: not a number: 'two' [while running 'Parse']"


def test_a_harnesss_failure_carried_by_the_runner_is_the_users_traceback_once():
    assert condensed(_WORKERS + _USERS + _DURING + _RERAISED + "\n") == _ONCE


def test_an_embedded_failure_is_the_users_traceback_once():
    # The exception itself reaches the worker: Beam's re-raise, under the worker's frames.
    assert condensed(_USERS + _DURING + _RERAISED) == _ONCE
    assert failure_of(_ONCE) == Failure(
        "ValueError: not a number: 'two' [while running 'Parse'] (at count.py:4 in parse)", "Parse"
    )


def test_other_causes_are_kept_whole():
    other_chain = (
        _USERS + _DURING + _USERS.replace("ValueError: not a number: 'two'", "KeyError: 3")
    )
    assert condensed(other_chain) == other_chain
    assert condensed("worker lost: silent for 31 s") == "worker lost: silent for 31 s"
    assert condensed(_USERS) == _USERS
