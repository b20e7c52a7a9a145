// versioned<T>: both representations (seqlock for a small trivially copyable T,
// hazard-pointer snapshots otherwise). Concurrent increments lose nothing and every
// commit adds exactly one version; the two-tabs conflict; seqlock readers never see a
// torn value; validate; try_update declining; giving up under a bounded policy;
// exception safety.
#include <interlock/versioned.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using interlock::version_type;
using interlock::versioned;

#if INTERLOCK_TSAN || defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

constexpr int thread_count = 8;

/// Small and trivially copyable: the seqlock representation.
struct counter {
  std::uint64_t count = 0;
  std::uint64_t twin = 0;  // always equal to count
};
static_assert(versioned<counter>::uses_seqlock);

/// Not trivially copyable: the snapshot representation.
struct profile {
  std::string name = "profile";
  std::uint64_t count = 0;
  std::vector<std::uint64_t> history = {0, 0, 0, 0};  // history[i] == count
};
static_assert(!versioned<profile>::uses_seqlock);

/// Eight words that must always agree with each other.
struct eight_words {
  std::array<std::uint64_t, 8> word{};
};
static_assert(versioned<eight_words>::uses_seqlock);                    // 64 bytes
static_assert(!versioned<std::array<std::uint64_t, 9>>::uses_seqlock);  // 72 bytes
struct alignas(16) over_aligned {
  std::uint64_t a, b;
};
static_assert(!versioned<over_aligned>::uses_seqlock);

std::uint64_t count_of(const counter& c) { return c.count; }
std::uint64_t count_of(const profile& p) { return p.count; }
bool consistent(const counter& c) { return c.count == c.twin; }
bool consistent(const profile& p) {
  return p.name == "profile" && std::all_of(p.history.begin(), p.history.end(),
                                            [&](std::uint64_t h) { return h == p.count; });
}
counter incremented(const counter& c) { return {c.count + 1, c.twin + 1}; }
profile incremented(const profile& p) {
  profile next = p;
  ++next.count;
  for (auto& h : next.history) ++h;
  return next;
}

template <class T>
void concurrent_increments(int per_thread) {
  versioned<T> value;
  REQUIRE(value.version() == versioned<T>::initial_version);
  std::atomic<int> not_committed{0};
  std::atomic<int> inconsistent{0};
  std::atomic<int> bad_version{0};
  std::vector<std::vector<version_type>> committed(thread_count);
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      committed[t].reserve(static_cast<std::size_t>(per_thread));
      for (int i = 0; i < per_thread; ++i) {
        const auto result = value.update([](const T& v) { return incremented(v); });
        if (!result.committed()) not_committed.fetch_add(1, std::memory_order_relaxed);
        if (!consistent(result.current.value)) inconsistent.fetch_add(1, std::memory_order_relaxed);
        // The initial count 0 is version 1, so a committed count n is version n + 1.
        if (result.current.version != count_of(result.current.value) + 1) {
          bad_version.fetch_add(1, std::memory_order_relaxed);
        }
        committed[t].push_back(result.current.version);
      }
    });
  }
  for (auto& thread : threads) thread.join();

  const auto total =
      static_cast<std::uint64_t>(thread_count) * static_cast<std::uint64_t>(per_thread);
  CHECK(not_committed.load() == 0);
  CHECK(inconsistent.load() == 0);
  CHECK(bad_version.load() == 0);
  const auto final_snapshot = value.read();
  CHECK(count_of(final_snapshot.value) == total);
  CHECK(consistent(final_snapshot.value));
  CHECK(final_snapshot.version == total + versioned<T>::initial_version);
  CHECK(value.version() == total + 1);
  // Every commit got its own version, and together they are exactly 2 .. total + 1.
  std::vector<version_type> all;
  for (const auto& per : committed) all.insert(all.end(), per.begin(), per.end());
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == total);
  bool contiguous = true;
  for (std::size_t i = 0; i < all.size(); ++i) contiguous = contiguous && all[i] == i + 2;
  CHECK(contiguous);
}

}  // namespace

TEST_CASE("versioned: 8 threads of increments through update lose nothing (seqlock)",
          "[versioned][stress]") {
  concurrent_increments<counter>(sanitized ? 40'000 : 100'000);
}

TEST_CASE("versioned: 8 threads of increments through update lose nothing (snapshots)",
          "[versioned][stress]") {
  concurrent_increments<profile>(sanitized ? 15'000 : 100'000);
}

TEST_CASE("versioned: a fresh value has version 1 and grows by one per commit", "[versioned]") {
  versioned<int> number{41};
  CHECK(number.read().version == 1);
  CHECK(number.read().value == 41);
  const auto result = number.try_commit(1, 42);
  CHECK(result.committed);
  CHECK(result.version == 2);
  CHECK_FALSE(result.current.has_value());
  CHECK(number.read().value == 42);

  versioned<std::string> text;  // value-initialized
  CHECK(text.read().value.empty());
  CHECK(text.version() == 1);
  const auto updated = text.update([](const std::string& s) { return s + "x"; });
  CHECK(updated.committed());
  CHECK(updated.attempts == 1);
  CHECK(updated.current.version == 2);
  CHECK(updated.current.value == "x");
  CHECK(text.try_commit(0, "never a version").version == 2);  // version 0 never exists
}

namespace {

/// What two tabs edit: a small record (seqlock) or a text (snapshots).
struct form {
  int title = 0;
  int body = 0;
};

template <class T>
struct tabs;

template <>
struct tabs<form> {
  static form initial() { return {1, 1}; }
  static form first_edit(form f) { return f.title = 2, f; }
  static form second_edit(form f) { return f.body = 3, f; }
  static bool same(const form& a, const form& b) { return a.title == b.title && a.body == b.body; }
  static form merged() { return {2, 3}; }
};

template <>
struct tabs<std::string> {
  static std::string initial() { return "draft"; }
  static std::string first_edit(std::string s) { return s + " +title"; }
  static std::string second_edit(std::string s) { return s + " +body"; }
  static bool same(const std::string& a, const std::string& b) { return a == b; }
  static std::string merged() { return "draft +title +body"; }
};

}  // namespace

TEMPLATE_TEST_CASE("versioned: the two-tabs conflict is detected and merged", "[versioned]", form,
                   std::string) {
  using edits = tabs<TestType>;
  versioned<TestType> record{edits::initial()};
  const auto tab_a = record.read();
  const auto tab_b = record.read();
  REQUIRE(tab_a.version == 1);
  REQUIRE(tab_b.version == 1);

  const auto first = record.try_commit(tab_a.version, edits::first_edit(tab_a.value));
  REQUIRE(first.committed);
  CHECK(first.version == 2);

  const auto second = record.try_commit(tab_b.version, edits::second_edit(tab_b.value));
  REQUIRE_FALSE(second.committed);
  CHECK(second.version == 2);
  REQUIRE(second.current.has_value());
  CHECK(edits::same(*second.current, edits::first_edit(edits::initial())));

  // Tab B merges its edit into what is current and retries on top of version 2.
  const auto retried = record.try_commit(second.version, edits::second_edit(*second.current));
  REQUIRE(retried.committed);
  CHECK(retried.version == 3);
  const auto now = record.read();
  CHECK(now.version == 3);
  CHECK(edits::same(now.value, edits::merged()));
}

TEMPLATE_TEST_CASE("versioned: validate says whether a read is still current", "[versioned]", form,
                   std::string) {
  versioned<TestType> record{tabs<TestType>::initial()};
  const auto seen = record.read();
  CHECK(record.validate(seen.version));
  CHECK_FALSE(record.validate(seen.version + 1));
  CHECK_FALSE(record.validate(0));
  REQUIRE(record.try_commit(seen.version, tabs<TestType>::first_edit(seen.value)).committed);
  CHECK_FALSE(record.validate(seen.version));
  CHECK(record.validate(seen.version + 1));
  // visit sees the same consistent pair without a copy.
  CHECK(record.visit([](const TestType&, version_type v) { return v; }) == seen.version + 1);
}

TEMPLATE_TEST_CASE("versioned: try_update may decline", "[versioned]", form, std::string) {
  versioned<TestType> record{tabs<TestType>::initial()};
  int calls = 0;
  const auto result = record.try_update([&](const TestType&) -> std::optional<TestType> {
    ++calls;
    return std::nullopt;
  });
  CHECK(result.status == versioned<TestType>::update_status::declined);
  CHECK_FALSE(result.committed());
  CHECK(result.attempts == 1);
  CHECK(calls == 1);
  CHECK(result.current.version == 1);
  CHECK(tabs<TestType>::same(result.current.value, tabs<TestType>::initial()));
  CHECK(record.version() == 1);

  const auto accepted = record.try_update(
      [](const TestType& v) -> std::optional<TestType> { return tabs<TestType>::first_edit(v); });
  CHECK(accepted.committed());
  CHECK(accepted.current.version == 2);
  CHECK(record.version() == 2);
}

TEMPLATE_TEST_CASE("versioned: update gives up when its policy is exhausted", "[versioned]", form,
                   std::string) {
  versioned<TestType> record{tabs<TestType>::initial()};
  // fn races a second writer every time: that writer commits between our read and
  // our commit, so every attempt conflicts.
  int interfering = 0;
  auto fn = [&](const TestType& v) {
    const auto now = record.read();
    if (record.try_commit(now.version, tabs<TestType>::first_edit(now.value)).committed)
      ++interfering;
    return tabs<TestType>::second_edit(v);
  };
  std::chrono::steady_clock::time_point fake_now{};
  int sleeps = 0;
  interlock::retry_environment env{[&] { return fake_now; },
                                   [&](std::chrono::nanoseconds d) {
                                     ++sleeps;
                                     fake_now += d;
                                   },
                                   [] { return std::uint64_t{12345}; }};
  const auto policy = interlock::retry_policy::exponential(
      std::chrono::milliseconds(1), std::chrono::milliseconds(8), interlock::jitter_kind::none, 3);
  const auto result = record.update(fn, policy, env);
  CHECK(result.status == versioned<TestType>::update_status::gave_up);
  CHECK(result.retry == interlock::retry_status::out_of_attempts);
  CHECK(result.attempts == 3);
  CHECK(sleeps == 2);
  CHECK(result.elapsed == std::chrono::milliseconds(3));
  CHECK(interfering == 3);
  CHECK(result.current.version == 4);  // the three interfering commits
  CHECK(record.version() == 4);
}

namespace {

struct fn_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

TEMPLATE_TEST_CASE("versioned: a throwing fn leaves value and version unchanged", "[versioned]",
                   form, std::string) {
  versioned<TestType> record{tabs<TestType>::initial()};
  REQUIRE(record.try_commit(1, tabs<TestType>::first_edit(tabs<TestType>::initial())).committed);
  const auto before = record.read();
  CHECK_THROWS_AS(record.update([](const TestType&) -> TestType { throw fn_failure("fn"); }),
                  fn_failure);
  CHECK_THROWS_AS(
      record.try_update([](const TestType&) -> std::optional<TestType> { throw fn_failure("fn"); }),
      fn_failure);
  const auto after = record.read();
  CHECK(after.version == before.version);
  CHECK(tabs<TestType>::same(after.value, before.value));
  CHECK(
      record.update([](const TestType& v) { return tabs<TestType>::second_edit(v); }).committed());
  CHECK(record.version() == before.version + 1);
}

namespace {

/// A value whose copy constructor throws while `armed` is set (moves never throw).
struct fragile {
  static inline bool armed = false;
  explicit fragile(int v) : value(v) {}
  fragile(const fragile& other) : value(other.value) {
    if (armed) throw std::runtime_error("copy failed");
  }
  fragile(fragile&& other) noexcept : value(other.value) {}
  fragile& operator=(const fragile&) = delete;
  int value;
};
static_assert(!versioned<fragile>::uses_seqlock);

struct disarm {
  ~disarm() { fragile::armed = false; }
};

}  // namespace

TEST_CASE("versioned: the destructor destroys the current value at once", "[versioned]") {
  // The snapshot representation used to retire its last node, so T's destructor ran
  // only at a later reclamation scan (or never, for an object destroyed at exit).
  auto resource = std::make_shared<int>(42);
  { versioned<std::shared_ptr<int>> v(resource); }
  CHECK(resource.use_count() == 1);

  {
    versioned<std::shared_ptr<int>> v(resource);
    CHECK(v.update([](const std::shared_ptr<int>& p) { return p; }).committed());
  }
  // The current value is gone; the one the update replaced may await reclamation.
  CHECK(resource.use_count() <= 2);
  interlock::reclaim_retired();
  CHECK(resource.use_count() == 1);
}

TEST_CASE("versioned: a throwing copy leaves value and version unchanged", "[versioned]") {
  versioned<fragile> record{fragile(1)};
  REQUIRE(record.try_commit(1, fragile(2)).committed);  // moved in: no copy
  disarm guard;
  fragile::armed = true;
  // update copies fn's result into the new node: the copy throws, nothing commits.
  CHECK_THROWS_AS(record.update([](const fragile& f) { return fragile(f.value + 1); }),
                  std::runtime_error);
  // A conflict copies the current value into the result: that copy throws.
  CHECK_THROWS_AS(record.try_commit(1, fragile(9)), std::runtime_error);
  // read() copies too.
  CHECK_THROWS_AS(record.read(), std::runtime_error);
  fragile::armed = false;
  const auto after = record.read();
  CHECK(after.version == 2);
  CHECK(after.value.value == 2);
  CHECK(record.update([](const fragile& f) { return fragile(f.value + 1); }).current.version == 3);
  CHECK(record.read().value.value == 3);
}

namespace {

template <class T>
void no_torn_reads(int reads_per_reader) {
  constexpr int readers = 3;
  // Each reader keeps reading until it has seen this many distinct versions, so its
  // reads overlap the writer's commits whatever the scheduler does.
  constexpr std::uint64_t min_changes = 100;
  versioned<T> value;
  std::atomic<bool> readers_done{false};
  std::atomic<int> torn{0};
  std::atomic<int> wrong_version{0};
  std::atomic<int> went_backwards{0};

  std::thread writer([&] {
    std::uint64_t n = 0;
    while (!readers_done.load(std::memory_order_acquire)) {
      ++n;
      T next{};
      for (auto& w : next.word) w = n;
      if (!value.try_commit(n, next).committed) wrong_version.fetch_add(1);  // the only writer
    }
  });
  std::vector<std::thread> threads;
  std::atomic<int> finished{0};
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&] {
      version_type last = 0;
      std::uint64_t changes = 0;
      for (int i = 0; i < reads_per_reader || changes < min_changes; ++i) {
        const auto s = value.read();
        const std::uint64_t first = s.value.word[0];
        if (!std::all_of(s.value.word.begin(), s.value.word.end(),
                         [first](std::uint64_t w) { return w == first; })) {
          torn.fetch_add(1, std::memory_order_relaxed);
        }
        if (s.version != first + 1) wrong_version.fetch_add(1, std::memory_order_relaxed);
        if (s.version < last) went_backwards.fetch_add(1, std::memory_order_relaxed);
        if (s.version != last) ++changes;
        last = s.version;
      }
      if (finished.fetch_add(1) + 1 == readers) readers_done.store(true, std::memory_order_release);
    });
  }
  for (auto& thread : threads) thread.join();
  writer.join();

  CHECK(torn.load() == 0);
  CHECK(wrong_version.load() == 0);
  CHECK(went_backwards.load() == 0);
}

struct sixteen_words {
  std::array<std::uint64_t, 16> word{};
};
static_assert(!versioned<sixteen_words>::uses_seqlock);

}  // namespace

TEST_CASE("versioned: seqlock readers racing a writer never see a torn value",
          "[versioned][stress]") {
  no_torn_reads<eight_words>(sanitized ? 200'000 : 1'000'000);  // 3 readers: millions of reads
}

TEST_CASE("versioned: snapshot readers racing a writer never see a torn value",
          "[versioned][stress]") {
  no_torn_reads<sixteen_words>(sanitized ? 50'000 : 300'000);
}
