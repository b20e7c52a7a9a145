// detail::keyed_table: exact lookups under the shard lock, lock-free lookups that
// never return a wrong or freed entry while other threads insert, erase and grow.
#include <interlock/detail/keyed_table.hpp>

#include <catch2/catch.hpp>

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
