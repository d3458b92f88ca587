#include "ring/slot_word.hpp"

#include <gtest/gtest.h>

namespace shmq::detail {
namespace {

TEST(SlotWord, FieldsRoundTrip) {
  for (std::uint64_t lap : {std::uint64_t{0}, std::uint64_t{1}, kLapMask - 1, kLapMask}) {
    for (SlotState s : {SlotState::free, SlotState::claimed, SlotState::ready, SlotState::held,
                        SlotState::skipped, SlotState::releasing_skipped}) {
      const std::uint64_t w = make_word(lap, s, 200, 4095);
      EXPECT_EQ(word_lap(w), lap);
      EXPECT_EQ(word_state(w), s);
      EXPECT_EQ(word_owner(w), 200u);
      EXPECT_EQ(word_aux(w), 4095u);
    }
  }
}

TEST(SlotWord, LapOverflowWrapsModulo40Bits) {
  const std::uint64_t w = make_word(kLapMask + 1, SlotState::free, 0, 0);
  EXPECT_EQ(word_lap(w), 0u);
  EXPECT_EQ(lap_diff(0, kLapMask), 1);
  EXPECT_EQ(lap_diff(kLapMask, 0), -1);
}

TEST(SlotWord, ZeroWordIsFreeAtLapZero) {
  EXPECT_EQ(word_state(0), SlotState::free);
  EXPECT_EQ(word_lap(0), 0u);
  EXPECT_TRUE(is_free(word_state(0)));
}

TEST(SlotWord, LapOfPositionUsesShift) {
  EXPECT_EQ(lap_of(0, 3), 0u);
  EXPECT_EQ(lap_of(7, 3), 0u);
  EXPECT_EQ(lap_of(8, 3), 1u);
  EXPECT_EQ(lap_of((std::uint64_t{1} << 43) + 9, 3), 1u);  // lap bits wrap
}

}  // namespace
}  // namespace shmq::detail
