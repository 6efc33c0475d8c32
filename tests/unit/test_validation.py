"""The request checks' own rules: what Beamjobs mints always passes them, sizes are UTF-8
bytes, and service options are finite numbers in their documented ranges."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beamjobs.app.service import new_job_id
from beamjobs.domain.errors import InvalidArgument
from beamjobs.domain.options import JOB_TIMEOUT_SECONDS, WORKER_VCPU, option_key, read_option
from beamjobs.pipeline.validation import require_id, staged_name_problem, text_problem


@given(st.text())
def test_every_minted_job_id_is_a_valid_id(job_name):
    job_id = new_job_id(job_name)
    assert require_id(job_id) == job_id


def test_names_are_bounded_in_utf8_bytes_not_characters():
    assert text_problem("job_name", "é" * 250, 500) is None  # 500 bytes
    assert "501 bytes" in text_problem("job_name", "é" * 250 + "e", 500)


@pytest.mark.parametrize("name", ["pkg.tar.gz", "requirements.txt", "x" * 255, "a b.whl"])
def test_plain_file_names_are_staged_names(name):
    assert staged_name_problem(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", "a\\b", "x" * 256, "a\x00b"])
def test_anything_else_is_not(name):
    assert staged_name_problem(name) is not None


@pytest.mark.parametrize("value", ["1", "86400", 3600, 3600.0, "31536000"])
def test_whole_timeouts_in_range_are_read(value):
    assert read_option({option_key("job_timeout_seconds"): value}, JOB_TIMEOUT_SECONDS) == float(
        value
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "0.4", "-1", "0", True, [1]])
def test_other_timeouts_are_invalid_arguments(value):
    with pytest.raises(InvalidArgument, match="--job_timeout_seconds"):
        read_option({option_key("job_timeout_seconds"): value}, JOB_TIMEOUT_SECONDS)


def test_a_fractional_vcpu_is_a_number_option_and_may_be_fractional():
    assert read_option({option_key("worker_vcpu"): "0.25"}, WORKER_VCPU) == 0.25
