"""What a caller may list, and page tokens that cannot be bent to another query."""

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beamjobs.domain.errors import InvalidArgument, PermissionDenied
from beamjobs.domain.identity import Caller
from beamjobs.domain.listing import job_query, page_size, page_token, resume_after
from beamjobs.domain.states import JobState

ALICE = Caller("arn:aws:iam::111122223333:user/alice")
ADMIN = Caller("arn:aws:iam::111122223333:role/ops", admin=True)
AFTER = "1764000000.000000#job-1"


def test_a_caller_lists_their_own_jobs_and_an_admin_anyones():
    assert job_query(ALICE).owner == ALICE.principal
    assert job_query(ALICE, owner=ALICE.principal).owner == ALICE.principal
    assert job_query(ADMIN).owner is None
    assert job_query(ADMIN, owner=ALICE.principal).owner == ALICE.principal
    with pytest.raises(PermissionDenied):
        job_query(ALICE, owner=ADMIN.principal)


@pytest.mark.parametrize(
    "filters",
    [
        {"states": ["SLEEPING"]},
        {"states": "DONE"},
        {"states": [3]},
        {"name_prefix": "x" * 501},
        {"name_prefix": 7},
        {"created_after": -1.0},
        {"created_before": 1e12},
        {"created_after": True},
        {"created_before": "2026"},
    ],
)
def test_malformed_filters_are_invalid_arguments(filters):
    with pytest.raises(InvalidArgument):
        job_query(ADMIN, **filters)


@pytest.mark.parametrize("size", [-1, 1001, True, 2.5, "10"])
def test_a_page_size_is_1_to_1000(size):
    with pytest.raises(InvalidArgument):
        page_size(size)
    assert page_size(0) == 100 and page_size(1000) == 1000


def test_a_token_resumes_its_own_query_only():
    query = job_query(ADMIN, states=["DONE"])
    token = page_token(query, AFTER)
    assert resume_after(query, token) == AFTER
    assert page_token(query, None) == "" and resume_after(query, "") is None
    with pytest.raises(InvalidArgument, match="other filters"):
        resume_after(job_query(ADMIN, states=["FAILED"]), token)
    with pytest.raises(InvalidArgument, match="other filters"):
        resume_after(job_query(ALICE, states=["DONE"]), token)


@pytest.mark.parametrize(
    "after",
    ["job-1", "1764000000.000000#", "1764000000.000000#../x", "01764000000.00000#j", 7, None],
)
def test_a_token_naming_no_place_in_a_listing_is_refused(after):
    query = job_query(ADMIN)
    forged = base64.urlsafe_b64encode(
        json.dumps(
            {
                "after": after,
                "query": json.loads(base64.urlsafe_b64decode(page_token(query, AFTER)))["query"],
            }
        ).encode()
    ).decode()
    with pytest.raises(InvalidArgument):
        resume_after(query, forged)


@given(st.text(max_size=2000))
def test_any_text_as_a_token_is_resumed_or_refused_as_invalid(token):
    query = job_query(ADMIN, states=[JobState.DONE.value])
    with contextlib.suppress(InvalidArgument):
        resume_after(query, token)
