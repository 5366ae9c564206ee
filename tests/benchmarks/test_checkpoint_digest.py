"""The checkpoint digest benchmark measures what it says, in this process."""

import pytest

from benchmarks import checkpoint_digest


@pytest.mark.slow  # about 11 s: three saves and restores
def test_digits_state_row():
    row = checkpoint_digest.measure("digits", repeats=1)
    assert row["state"] == "digits" and row["arrays"] > 100 and 1 < row["mbytes"] < 20
    timed = [k for k in row if k.endswith("_s")]
    assert sorted(timed) == [
        "digest_first_s",
        "digest_s",
        "restore_with_digest_s",
        "restore_without_digest_s",
        "save_with_digest_s",
        "save_without_digest_s",
    ]
    assert all(row[k] > 0 for k in timed)
