"""The limits AWS enforces and moto does not, measured as AWS measures them."""

from beamjobs.store import Message
from tests.integration.conftest import make_job


def test_message_batches_fit_dynamodbs_item_limit_in_utf8_bytes(stores, faults):
    # Given AWS's 400 KB item limit, and 50 messages of 6,000 '€' (18,000 bytes each, 900 KB)
    faults.enforce_item_limit()
    stores.jobs.create(make_job("euros"))
    messages = [Message("JOB_MESSAGE_BASIC", "€" * 6000, float(i)) for i in range(50)]
    # When they are appended
    stores.jobs.append_messages("euros", messages)
    # Then all of them are stored, in order, and no item was refused
    stored = [m for e in stores.jobs.events("euros") for m in e.messages]
    assert [m.time for m in stored] == [float(i) for i in range(50)]
    assert ("PutItem", "item_limit") not in faults.fired


def test_a_message_over_the_item_limit_in_bytes_is_cut_and_says_so(stores, faults):
    faults.enforce_item_limit()
    stores.jobs.create(make_job("huge"))
    stores.jobs.append_messages("huge", [Message("JOB_MESSAGE_ERROR", "€" * 200_000, 1.0)])
    [message] = stores.jobs.events("huge")[-1].messages
    assert message.text.startswith("€" * 1000) and "600000 bytes in all" in message.text
    assert ("PutItem", "item_limit") not in faults.fired
