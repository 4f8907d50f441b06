"""The cache contract's record of a member (cache_conformance/probes/contract.py): present, deprecated or absent, read from
the object a user holds; a note to deprecate some day is not a deprecation."""

import logging

from cache_conformance.probes import contract

logger = logging.getLogger(__name__)


class StandInCache:
    def __init__(self):
        self.max_batch_size = 1  # an instance attribute: offered although the class does not define it

    def get_seq_length(self):
        # TODO: deprecate this in favour of something else (a plan, not a deprecation)
        return 0

    def get_max_cache_shape(self):
        logger.warning("`get_max_cache_shape` is deprecated, and will be removed in version 5.16")
        return 0


def test_a_member_is_present_deprecated_or_absent_as_the_object_offers_it():
    cache = StandInCache()
    states = {name: contract.member_of_object(cache, name)["state"]
              for name in ("get_seq_length", "get_max_cache_shape", "max_batch_size", "crop")}
    assert states == {"get_seq_length": "present", "get_max_cache_shape": "deprecated", "max_batch_size": "present",
                      "crop": "absent"}
    assert contract.member_of_object(cache, "crop")["signature"] is None
    assert contract.member_of_object(cache, "max_batch_size")["signature"] == "(attribute)"
