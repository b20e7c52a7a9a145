// detail::keyed_table: exact lookups under the shard lock, lock-free lookups that
// never return a wrong or freed entry while other threads insert, erase and grow.
#include <interlock/detail/keyed_table.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct test_entry : interlock::detail::keyed_entry<std::string> {
  test_entry(std::string k, std::uint64_t h, std::uint64_t p)
      : keyed_entry(std::move(k), h), payload(p) {
    reclaim = [](interlock::detail::retirable* self) noexcept {
      auto* e = static_cast<test_entry*>(self);
      e->payload = 0xDEADBEEF;  // a reader of a freed entry would see this (ASan sees more)
      delete e;
    };
  }
  std::uint64_t payload;
};

using table_type = interlock::detail::keyed_table<std::string, test_entry>;

std::uint64_t payload_of(std::string_view key) { return std::hash<std::string_view>{}(key) | 1; }

bool insert_if_absent(table_type& table, const std::string& key) {
  const auto h = table.hash_of(key);
  auto shard = table.lock_shard(h);
  if (shard.find(key) != nullptr) return false;
  shard.insert(new test_entry(key, h, payload_of(key)));
  return true;
}

bool erase_if_present(table_type& table, const std::string& key) {
  const auto h = table.hash_of(key);
  test_entry* victim = nullptr;
  {
    auto shard = table.lock_shard(h);
    victim = shard.find(key);
    if (victim == nullptr) return false;
    shard.erase(victim);
  }
  table_type::retire(victim);
  return true;
}

}  // namespace

TEST_CASE("keyed_table: insert, find (locked and lock-free), erase, grow", "[keyed_table]") {
  table_type table(4);
  constexpr int count = 5000;  // forces every shard to grow several times
  for (int i = 0; i < count; ++i) REQUIRE(insert_if_absent(table, "key:" + std::to_string(i)));
  CHECK_FALSE(insert_if_absent(table, "key:7"));
  CHECK(table.size() == count);
  table_type::lookup_guards guards;
  for (int i = 0; i < count; ++i) {
    const std::string key = "key:" + std::to_string(i);
    test_entry* e = table.find(guards, std::string_view(key), table.hash_of(std::string_view(key)));
    REQUIRE(e != nullptr);
    CHECK(e->key == key);
    CHECK(e->payload == payload_of(key));
  }
  CHECK(table.find(guards, std::string_view("absent"), table.hash_of(std::string_view("absent"))) ==
        nullptr);
  for (int i = 0; i < count; i += 2) REQUIRE(erase_if_present(table, "key:" + std::to_string(i)));
  CHECK(table.size() == count / 2);
  const std::string erased = "key:10";
  CHECK(table.find(guards, erased, table.hash_of(erased)) == nullptr);
  for (int i = 1; i < count; i += 2) REQUIRE(erase_if_present(table, "key:" + std::to_string(i)));
  CHECK(table.size() == 0);
}

TEST_CASE("keyed_table: lock-free readers never see a wrong or freed entry",
          "[keyed_table][stress]") {
#if INTERLOCK_TSAN || defined(__SANITIZE_ADDRESS__)
  constexpr int operations = 20000;
#else
  constexpr int operations = 200000;
#endif
  table_type table(8);
  constexpr int key_space = 512;
  std::vector<std::string> keys;
  for (int i = 0; i < key_space; ++i) keys.push_back("user:" + std::to_string(100000 + i));

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> wrong{0};
  std::atomic<std::uint64_t> found{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 random(static_cast<std::uint64_t>(w) + 1);
      for (int i = 0; i < operations; ++i) {
        const auto& key = keys[random() % key_space];
        if (random() % 2 == 0) {
          insert_if_absent(table, key);
        } else {
          erase_if_present(table, key);
        }
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937_64 random(static_cast<std::uint64_t>(r) + 100);
      table_type::lookup_guards guards;
      while (!stop.load(std::memory_order_relaxed)) {
        const std::string_view key = keys[random() % key_space];
        if (test_entry* e = table.find(guards, key, table.hash_of(key))) {
          found.fetch_add(1, std::memory_order_relaxed);
          if (e->key != key || e->payload != payload_of(key)) wrong.fetch_add(1);
        }
      }
    });
  }
  threads[0].join();
  threads[1].join();
  stop = true;
  threads[2].join();
  threads[3].join();
  CHECK(wrong.load() == 0);
  CHECK(found.load() > 0);
  for (const auto& key : keys) erase_if_present(table, key);
  CHECK(table.size() == 0);
}

namespace {

/// Sixteen hash values for all keys: chains many entries long, so lookups step past
/// entries (the stepping hazard guard) and compare keys of equal hashes.
struct colliding_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view key) const noexcept {
    return std::hash<std::string_view>{}(key) % 16;
  }
};

using colliding_table = interlock::detail::keyed_table<std::string, test_entry, colliding_hash>;

}  // namespace

TEST_CASE("keyed_table: lookups step along long chains", "[keyed_table]") {
  colliding_table table(4);
  constexpr int count = 400;  // 25 per hash value on average
  for (int i = 0; i < count; ++i) {
    const std::string key = "k" + std::to_string(i);
    const auto h = table.hash_of(key);
    auto shard = table.lock_shard(h);
    shard.insert(new test_entry(key, h, payload_of(key)));
  }
  colliding_table::lookup_guards guards;
  for (int i = 0; i < count; ++i) {
    const std::string key = "k" + std::to_string(i);
    test_entry* e = table.find(guards, key, table.hash_of(key));
    REQUIRE(e != nullptr);
    CHECK(e->key == key);
  }
  CHECK(table.find(guards, std::string("absent"), table.hash_of(std::string("absent"))) == nullptr);
}

TEST_CASE("keyed_table: readers on replaced bucket arrays never see a freed entry",
          "[keyed_table][stress]") {
  // Each round fills a fresh table from empty (every shard grows, replacing its
  // bucket array several times) while a second writer erases behind the first and
  // readers look keys up; with sixteen hash values readers also walk long chains.
#if INTERLOCK_TSAN || defined(__SANITIZE_ADDRESS__)
  constexpr int rounds = 4;
  constexpr int keys_per_round = 2000;
#else
  constexpr int rounds = 20;
  constexpr int keys_per_round = 5000;
#endif
  std::uint64_t found_while_writing = 0;  // over all rounds
  for (int round = 0; round < rounds; ++round) {
    colliding_table table(2);
    std::atomic<int> inserted{0};
    std::atomic<int> readers_started{0};  // the writers start once both readers run
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> wrong{0};
    std::atomic<std::uint64_t> found{0};
    auto key_of = [](int i) { return "order:" + std::to_string(i); };
    std::vector<std::thread> threads;
    auto wait_for_readers = [&] {
      while (readers_started.load(std::memory_order_acquire) < 2) std::this_thread::yield();
    };
    threads.emplace_back([&] {  // inserts every key in order
      wait_for_readers();
      for (int i = 0; i < keys_per_round; ++i) {
        const std::string key = key_of(i);
        const auto h = table.hash_of(key);
        {
          auto shard = table.lock_shard(h);
          shard.insert(new test_entry(key, h, payload_of(key)));
        }
        inserted.store(i + 1, std::memory_order_release);
      }
    });
    threads.emplace_back([&] {  // erases every third key once it is in
      for (int i = 0; i < keys_per_round; i += 3) {
        while (inserted.load(std::memory_order_acquire) <= i) std::this_thread::yield();
        const std::string key = key_of(i);
        const auto h = table.hash_of(key);
        test_entry* victim = nullptr;
        {
          auto shard = table.lock_shard(h);
          victim = shard.find(key);
          if (victim != nullptr) shard.erase(victim);
        }
        if (victim != nullptr) colliding_table::retire(victim);
      }
    });
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        std::mt19937_64 random(static_cast<std::uint64_t>(round * 2 + r));
        colliding_table::lookup_guards guards;
        readers_started.fetch_add(1, std::memory_order_release);
        while (!stop.load(std::memory_order_relaxed)) {
          // Mostly keys near the insertion front: the ones being erased, in the
          // chains that growing moves.
          const int front = inserted.load(std::memory_order_relaxed);
          const int i = random() % 4 != 0 && front > 0
                            ? std::max(0, front - 1 - static_cast<int>(random() % 32))
                            : static_cast<int>(random() % keys_per_round);
          const std::string key = key_of(i);
          if (test_entry* e = table.find(guards, key, table.hash_of(key))) {
            found.fetch_add(1, std::memory_order_relaxed);
            if (e->key != key || e->payload != payload_of(key)) wrong.fetch_add(1);
          }
        }
      });
    }
    threads[0].join();
    threads[1].join();
    stop = true;
    threads[2].join();
    threads[3].join();
    CHECK(wrong.load() == 0);
    found_while_writing += found.load();
    // Every key not erased is there, found lock-free.
    colliding_table::lookup_guards guards;
    for (int i = 0; i < keys_per_round; ++i) {
      const std::string key = key_of(i);
      REQUIRE((table.find(guards, key, table.hash_of(key)) != nullptr) == (i % 3 != 0));
    }
  }
  CHECK(found_while_writing > 0);  // the readers did overlap the writers
  interlock::reclaim_retired();
}

namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

struct case_insensitive_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view key) const {
    std::string folded(key);
    for (char& c : folded) c = lower(c);
    return std::hash<std::string>{}(folded);
  }
};

struct case_insensitive_equal {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
  }
};

}  // namespace

TEST_CASE("keyed_table: a custom key equality is what lookups use", "[keyed_table]") {
  // String keys are compared byte by byte only under std::equal_to; any other
  // equality is called as given, by lock-free and locked lookups alike.
  interlock::detail::keyed_table<std::string, test_entry, case_insensitive_hash,
                                 case_insensitive_equal>
      table(2);
  const std::string stored = "Signup:42:Lead";
  const auto h = table.hash_of(stored);
  {
    auto shard = table.lock_shard(h);
    shard.insert(new test_entry(stored, h, 7));
  }
  const std::string asked = "SIGNUP:42:lead";
  decltype(table)::lookup_guards guards;
  test_entry* found = table.find(guards, asked, table.hash_of(asked));
  REQUIRE(found != nullptr);
  CHECK(found->key == stored);
  CHECK(table.lock_shard(table.hash_of(asked)).find(asked) == found);
  CHECK(table.find(guards, std::string("signup:42:leaf"),
                   table.hash_of(std::string("signup:42:leaf"))) == nullptr);
}

namespace {

struct wide_entry : interlock::detail::keyed_entry<std::u16string> {
  wide_entry(std::u16string k, std::uint64_t h) : keyed_entry(std::move(k), h) {
    reclaim = [](interlock::detail::retirable* self) noexcept {
      delete static_cast<wide_entry*>(self);
    };
  }
};

}  // namespace

TEST_CASE("keyed_table: wide string keys are compared by their characters", "[keyed_table]") {
  // Keys of every length around the word sizes the byte comparison switches at, and
  // pairs that differ only in their last character.
  interlock::detail::keyed_table<std::u16string, wide_entry> table(2);
  std::vector<std::u16string> keys;
  for (std::size_t n = 0; n <= 12; ++n) {
    std::u16string key(n, u'k');
    keys.push_back(key);
    if (n > 0) {
      key.back() = u'\u4e2d';  // a character whose two bytes both differ from u'k''s
      keys.push_back(key);
    }
  }
  for (const auto& key : keys) {
    const auto h = table.hash_of(key);
    auto shard = table.lock_shard(h);
    REQUIRE(shard.find(key) == nullptr);
    shard.insert(new wide_entry(key, h));
  }
  decltype(table)::lookup_guards guards;
  for (const auto& key : keys) {
    wide_entry* e = table.find(guards, std::u16string_view(key), table.hash_of(key));
    REQUIRE(e != nullptr);
    CHECK(e->key == key);
  }
  const std::u16string absent = u"kkkkkkkkkkkkkkkkk";  // 17 characters: longer than any key
  CHECK(table.find(guards, absent, table.hash_of(absent)) == nullptr);
}
