"""Tests for the room-version registry."""

from twisted.trial import unittest

from mxserver.events.versions import KNOWN_ROOM_VERSIONS, EventFormat, StateResAlgorithm, get_room_version


class RoomVersionRegistryTests(unittest.SynchronousTestCase):
    def test_all_stable_versions_known(self) -> None:
        self.assertEqual(sorted(KNOWN_ROOM_VERSIONS, key=int), [str(n) for n in range(1, 13)])

    def test_feature_matrix(self) -> None:
        # rooms/_index.md feature matrix
        self.assertFalse(get_room_version("6").knock_join_rule)
        self.assertTrue(get_room_version("7").knock_join_rule)
        self.assertFalse(get_room_version("7").restricted_join_rule)
        self.assertTrue(get_room_version("8").restricted_join_rule)
        self.assertFalse(get_room_version("9").knock_restricted_join_rule)
        self.assertTrue(get_room_version("10").knock_restricted_join_rule)
        self.assertFalse(get_room_version("11").hydra)
        self.assertTrue(get_room_version("12").hydra)

    def test_algorithms(self) -> None:
        self.assertIs(get_room_version("1").state_res, StateResAlgorithm.V1)
        self.assertIs(get_room_version("2").event_format, EventFormat.V1)
        self.assertIs(get_room_version("3").event_format, EventFormat.V3)
        self.assertIs(get_room_version("11").state_res, StateResAlgorithm.V2)
        self.assertIs(get_room_version("12").state_res, StateResAlgorithm.V2_1)

    def test_unknown(self) -> None:
        self.assertIsNone(get_room_version("13"))
        self.assertIsNone(get_room_version("org.example.custom"))
