// versioned<T>: both representations (seqlock for a small trivially copyable T,
// hazard-pointer snapshots otherwise). Concurrent increments lose nothing and every
// commit adds exactly one version; the two-tabs conflict; seqlock readers never see a
// torn value; validate; try_update declining; giving up under a bounded policy;
// exception safety; committers racing on one version (one winner each), conflicts
// racing commits (value and version from one read), and optimistic reads validated
// while writers commit.
#include <interlock/versioned.hpp>

#include <catch2/catch.hpp>

#include "support/bounded_thread_group.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
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
/// Trivially copyable, but a const member: copying bytes over a live one (what a
/// seqlock reader does) would modify a const object, so it takes the node path.
struct with_const_member {
  const std::uint64_t id;
  std::uint64_t count;
};
static_assert(std::is_trivially_copyable_v<with_const_member>);
static_assert(!versioned<with_const_member>::uses_seqlock);

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

TEST_CASE("versioned: seqlock readers finish while a writer commits back to back",
          "[versioned][stress]") {
  // One writer commits as fast as it can, with no gap between its writes, and every
  // other hardware thread reads. A seqlock read needs two equal even sequence numbers
  // around its copy; on a 16-core machine such a writer kept a reader from ever
  // getting them (the torn-value test above hung for minutes) until starving readers
  // made writers pause. A reader that never finishes fails this test after a minute.
  struct state {
    versioned<eight_words> value;
    std::atomic<int> readers_finished{0};
    std::atomic<bool> stop{false};
    std::atomic<int> torn{0};
    std::atomic<int> finished{0};  // bounded_thread_group's count
  };
  const int readers = std::clamp(static_cast<int>(std::thread::hardware_concurrency()) - 1, 1, 15);
  constexpr int reads_per_reader = sanitized ? 2'000 : 20'000;
  interlock_test::bounded_thread_group<state> group;
  group.spawn([readers](state& s) {
    for (std::uint64_t n = 1; s.readers_finished.load() < readers && !s.stop.load(); ++n) {
      eight_words next;
      next.word.fill(n);
      if (!s.value.try_commit(n, next).committed) s.torn.fetch_add(1);  // the only writer
    }
  });
  group.spawn(readers, [](state& s, int) {
    for (int i = 0; i < reads_per_reader; ++i) {
      const auto snap = s.value.read();
      const std::uint64_t first = snap.value.word[0];
      const bool whole = std::all_of(snap.value.word.begin(), snap.value.word.end(),
                                     [first](std::uint64_t w) { return w == first; });
      if (!whole || snap.version != first + 1) s.torn.fetch_add(1);
    }
    s.readers_finished.fetch_add(1);
  });
  const bool all_finished = group.finish_within(std::chrono::seconds(sanitized ? 300 : 60));
  group.state().stop.store(true);  // lets a detached writer (and so its readers) end
  CHECK(all_finished);
  CHECK(group.state().torn.load() == 0);
}

TEST_CASE("versioned: snapshot readers racing a writer never see a torn value",
          "[versioned][stress]") {
  no_torn_reads<sixteen_words>(sanitized ? 50'000 : 300'000);
}

namespace {

/// A value that carries its own version, so a reader can tell whether a value and a
/// version came from one commit: version_copy must equal the version reported with it.
/// 64 bytes, trivially copyable: the seqlock representation.
struct stamped {
  std::uint64_t version_copy = 1;
  std::uint64_t writer = 0;
  // echo[i] == version_copy * (i + 2) + writer
  std::array<std::uint64_t, 6> echo{2, 3, 4, 5, 6, 7};
};
static_assert(versioned<stamped>::uses_seqlock);

/// The same for the snapshot representation (a heap-allocated string).
struct stamped_text {
  std::uint64_t version_copy = 1;
  std::uint64_t writer = 0;
  std::string text = text_for(1, 0);

  static std::string text_for(std::uint64_t version, std::uint64_t writer) {
    return "version " + std::to_string(version) + " by writer " + std::to_string(writer) +
           ", long enough to live on the heap";
  }
};
static_assert(!versioned<stamped_text>::uses_seqlock);

template <class T>
T stamp(std::uint64_t version, std::uint64_t writer);

template <>
stamped stamp<stamped>(std::uint64_t version, std::uint64_t writer) {
  stamped s;
  s.version_copy = version;
  s.writer = writer;
  for (std::size_t i = 0; i < s.echo.size(); ++i) s.echo[i] = version * (i + 2) + writer;
  return s;
}

template <>
stamped_text stamp<stamped_text>(std::uint64_t version, std::uint64_t writer) {
  return {version, writer, stamped_text::text_for(version, writer)};
}

/// True when the value is one writer's whole value (not a mix of two commits).
bool intact(const stamped& s) {
  for (std::size_t i = 0; i < s.echo.size(); ++i) {
    if (s.echo[i] != s.version_copy * (i + 2) + s.writer) return false;
  }
  return true;
}
bool intact(const stamped_text& s) {
  return s.text == stamped_text::text_for(s.version_copy, s.writer);
}

/// Raises `target` to at least `value`.
void raise_to(std::atomic<version_type>& target, version_type value) {
  version_type current = target.load(std::memory_order_relaxed);
  while (current < value && !target.compare_exchange_weak(current, value, std::memory_order_release,
                                                          std::memory_order_relaxed)) {
  }
}

}  // namespace

TEMPLATE_TEST_CASE(
    "versioned: committers racing on the same version: exactly one wins each version, "
    "the others see it",
    "[versioned][stress]", stamped, stamped_text) {
  // Round r: every committer calls try_commit on top of version r + 1 at once (they spin
  // on the round counter, so they leave it together), and no one starts round r + 1
  // before all have tried. Exactly one must win each round; the others must conflict
  // with the winner's version r + 2 and value (no other commit can happen meanwhile).
  constexpr int committers = 3;
  const version_type rounds = sanitized ? 5'000 : 40'000;
  versioned<TestType> value;
  std::vector<std::atomic<std::uint32_t>> winners(static_cast<std::size_t>(rounds));
  std::atomic<std::uint64_t> tried{0};              // attempts finished, all rounds
  std::atomic<std::uint64_t> wrong_new_version{0};  // committed, but not as expected + 1
  std::atomic<std::uint64_t> wrong_conflict{0};     // conflict not with the winner's commit
  std::latch start(committers);

  std::vector<std::thread> threads;
  for (int t = 0; t < committers; ++t) {
    threads.emplace_back([&, t] {
      const auto writer = static_cast<std::uint64_t>(t);
      start.arrive_and_wait();
      for (version_type round = 0; round < rounds; ++round) {
        // Wait until every committer has finished round - 1.
        for (unsigned spins = 0; tried.load(std::memory_order_acquire) < committers * round;) {
          if (++spins % 64 == 0) std::this_thread::yield();
        }
        const version_type expected = round + versioned<TestType>::initial_version;
        const auto result = value.try_commit(expected, stamp<TestType>(expected + 1, writer));
        if (result.committed) {
          winners[static_cast<std::size_t>(round)].fetch_add(1, std::memory_order_relaxed);
          if (result.version != expected + 1) {
            wrong_new_version.fetch_add(1, std::memory_order_relaxed);
          }
        } else if (result.version != expected + 1 || !result.current ||
                   result.current->version_copy != expected + 1 || !intact(*result.current)) {
          wrong_conflict.fetch_add(1, std::memory_order_relaxed);
        }
        tried.fetch_add(1, std::memory_order_acq_rel);
      }
    });
  }
  for (auto& thread : threads) thread.join();

  std::uint64_t no_winner = 0;
  std::uint64_t several_winners = 0;
  for (const auto& w : winners) {
    if (w.load() == 0) ++no_winner;
    if (w.load() > 1) ++several_winners;
  }
  CHECK(several_winners == 0);
  CHECK(no_winner == 0);
  CHECK(wrong_new_version.load() == 0);
  CHECK(wrong_conflict.load() == 0);
  const auto final_snapshot = value.read();
  CHECK(final_snapshot.version == rounds + versioned<TestType>::initial_version);
  CHECK(final_snapshot.value.version_copy == final_snapshot.version);
  CHECK(intact(final_snapshot.value));
}

TEMPLATE_TEST_CASE(
    "versioned: free-running committers commit each version once, and conflicts racing "
    "commits carry a value and version from one read",
    "[versioned][stress]", stamped, stamped_text) {
  // Committers race try_commit on the version they last saw (from their own commit or
  // from a conflict, never from a separate read). None stops before every one of them
  // has won `min_wins` times, so they run side by side whatever the scheduler does. A
  // stale committer keeps offering versions that are no longer current, so its
  // conflicts race the commits.
  constexpr int committers = 3;
  const std::uint32_t min_wins = sanitized ? 5'000 : 25'000;
  const version_type max_version = sanitized ? 200'000 : 2'000'000;  // bounds a starved run
  versioned<TestType> value;
  // successes[v]: commits made on top of expected version v.
  std::vector<std::atomic<std::uint32_t>> successes(static_cast<std::size_t>(max_version) + 2);
  std::array<std::atomic<std::uint32_t>, committers> wins{};
  std::atomic<std::uint64_t> out_of_range{0};       // a commit on top of max_version + 2 or later
  std::atomic<std::uint64_t> wrong_new_version{0};  // committed, but not as expected + 1
  std::atomic<std::uint64_t> torn_conflict{0};      // conflict value not from conflict version
  std::atomic<std::uint64_t> no_value{0};           // conflict without a current value
  std::atomic<std::uint64_t> not_newer{0};          // conflict version <= the expected one
  std::atomic<std::uint64_t> stale_conflicts{0};
  std::atomic<bool> done{false};
  std::latch start(committers + 1);

  // One try_commit on top of `expected`, checked; returns the result's version.
  auto attempt = [&](version_type expected, std::uint64_t writer, bool& committed) {
    const auto result = value.try_commit(expected, stamp<TestType>(expected + 1, writer));
    committed = result.committed;
    if (result.committed) {
      if (expected < successes.size()) {
        successes[static_cast<std::size_t>(expected)].fetch_add(1, std::memory_order_relaxed);
      } else {
        out_of_range.fetch_add(1, std::memory_order_relaxed);
      }
      if (result.version != expected + 1) wrong_new_version.fetch_add(1, std::memory_order_relaxed);
      return result.version;
    }
    if (!result.current) {
      no_value.fetch_add(1, std::memory_order_relaxed);
    } else if (result.current->version_copy != result.version || !intact(*result.current)) {
      torn_conflict.fetch_add(1, std::memory_order_relaxed);
    }
    if (result.version <= expected) not_newer.fetch_add(1, std::memory_order_relaxed);
    return result.version;
  };
  auto everyone_won_enough = [&] {
    return std::all_of(wins.begin(), wins.end(), [&](const std::atomic<std::uint32_t>& w) {
      return w.load(std::memory_order_relaxed) >= min_wins;
    });
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < committers; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      version_type expected = versioned<TestType>::initial_version;
      bool committed = false;
      while (expected <= max_version && !everyone_won_enough()) {
        expected = attempt(expected, static_cast<std::uint64_t>(t), committed);
        if (committed) wins[static_cast<std::size_t>(t)].fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  threads.emplace_back([&] {
    start.arrive_and_wait();
    version_type seen = versioned<TestType>::initial_version;
    bool committed = false;
    for (std::uint64_t i = 0; i < 1'000 || !done.load(std::memory_order_acquire); ++i) {
      // The initial version, or one behind what it last saw: never current.
      const version_type stale = (i % 2 == 0 || seen < 2) ? 1 : seen - 1;
      seen = std::max(seen, attempt(stale, committers, committed));
      stale_conflicts.fetch_add(committed ? 0 : 1, std::memory_order_relaxed);
    }
  });
  for (int t = 0; t < committers; ++t) threads[static_cast<std::size_t>(t)].join();
  done.store(true, std::memory_order_release);
  threads.back().join();

  // Exactly one commit on top of each version 1 .. last - 1, and none on top of later ones.
  const auto final_snapshot = value.read();
  const version_type last = final_snapshot.version;
  REQUIRE(last <= successes.size());
  std::uint64_t twice = 0;
  std::uint64_t skipped = 0;
  std::uint64_t beyond = 0;
  for (std::size_t v = 0; v < successes.size(); ++v) {
    const auto n = successes[v].load();
    if (v == 0 || v >= last) {
      beyond += n;  // version 0 never exists; nothing was committed on top of `last`
    } else if (n == 0) {
      ++skipped;
    } else if (n > 1) {
      ++twice;
    }
  }
  CHECK(twice == 0);
  CHECK(skipped == 0);
  CHECK(beyond == 0);
  CHECK(out_of_range.load() == 0);
  CHECK(wrong_new_version.load() == 0);
  CHECK(no_value.load() == 0);
  CHECK(torn_conflict.load() == 0);
  CHECK(not_newer.load() == 0);
  CHECK(stale_conflicts.load() > 0);
  CHECK(final_snapshot.value.version_copy == last);
  CHECK(intact(final_snapshot.value));
}

TEMPLATE_TEST_CASE(
    "versioned: validate racing commits never vouches for a superseded version, and "
    "optimistic reads stay consistent",
    "[versioned][stress]", stamped, stamped_text) {
  // Writers commit through try_commit, merging conflicts, and raise `published` after
  // each commit. Readers make StampedLock-style optimistic reads: v = version(), read,
  // validate(v). Each reader keeps reading until it has seen `min_changes` distinct
  // versions, and the writers commit until the readers are done, so reads and commits
  // overlap whatever the scheduler does.
  constexpr int writers = 2;
  constexpr int readers = 2;
  const int reads_per_reader = sanitized ? 20'000 : 60'000;
  constexpr std::uint64_t min_changes = 100;
  versioned<TestType> value;
  std::atomic<version_type> published{versioned<TestType>::initial_version};
  std::atomic<int> readers_left{readers};
  std::atomic<std::uint64_t> torn{0};               // read value not from its version
  std::atomic<std::uint64_t> went_back{0};          // older than a completed commit or than v
  std::atomic<std::uint64_t> stale_validated{0};    // validate(v) true after v was superseded
  std::atomic<std::uint64_t> changed_validated{0};  // validate(v) true, but the read saw later
  std::latch start(writers + readers);

  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      start.arrive_and_wait();
      version_type seen = value.version();
      while (readers_left.load(std::memory_order_acquire) != 0) {
        const auto result =
            value.try_commit(seen, stamp<TestType>(seen + 1, static_cast<std::uint64_t>(w)));
        seen = result.version;  // committed: the new version; conflict: the current one
        if (result.committed) raise_to(published, result.version);
      }
    });
  }
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      version_type last = 0;
      std::uint64_t changes = 0;
      for (int i = 0; i < reads_per_reader || changes < min_changes; ++i) {
        const version_type before = published.load(std::memory_order_acquire);
        const version_type v = value.version();
        const auto s = value.read();
        const version_type before_check = published.load(std::memory_order_acquire);
        const bool still_current = value.validate(v);
        if (s.value.version_copy != s.version || !intact(s.value)) {
          torn.fetch_add(1, std::memory_order_relaxed);
        }
        if (v < before || s.version < v) went_back.fetch_add(1, std::memory_order_relaxed);
        if (still_current) {
          // v was current at the check, and versions only grow: the read in between
          // saw exactly v, and no commit after v had completed before the check.
          if (s.version != v) changed_validated.fetch_add(1, std::memory_order_relaxed);
          if (before_check > v) stale_validated.fetch_add(1, std::memory_order_relaxed);
        }
        // A version from an earlier round: once a later commit completed, never current.
        if (last != 0 && before_check > last && value.validate(last)) {
          stale_validated.fetch_add(1, std::memory_order_relaxed);
        }
        if (s.version != last) ++changes;
        last = s.version;
      }
      readers_left.fetch_sub(1, std::memory_order_release);
    });
  }
  for (auto& thread : threads) thread.join();

  CHECK(torn.load() == 0);
  CHECK(went_back.load() == 0);
  CHECK(stale_validated.load() == 0);
  CHECK(changed_validated.load() == 0);
  const auto final_snapshot = value.read();
  CHECK(published.load() == final_snapshot.version);
  CHECK(final_snapshot.value.version_copy == final_snapshot.version);
  CHECK(value.validate(final_snapshot.version));  // quiescent: the current version validates
}

TEST_CASE("versioned: a T with a const member works (node path)", "[versioned]") {
  versioned<with_const_member> value{with_const_member{7, 0}};
  const auto result = value.update([](const with_const_member& v) {
    return with_const_member{v.id, v.count + 1};
  });
  CHECK(result.status == versioned<with_const_member>::update_status::committed);
  const auto now = value.read();
  CHECK(now.value.id == 7);
  CHECK(now.value.count == 1);
  CHECK(now.version == 2);
}

TEMPLATE_TEST_CASE("versioned: update does not throw after it committed, even if the clock does",
                   "[versioned]", form, std::string) {
  // After a conflict the retry loop reads the clock once more when an attempt
  // succeeds; an injected clock that threw there used to turn a committed update into
  // an exception (and a caller's retry into a second commit).
  versioned<TestType> record{tabs<TestType>::initial()};
  bool interfere = true;
  auto fn = [&](const TestType& v) {
    if (std::exchange(interfere, false)) {
      const auto now = record.read();
      (void)record.try_commit(now.version, tabs<TestType>::first_edit(now.value));
    }
    return tabs<TestType>::second_edit(v);
  };
  int reads = 0;
  std::chrono::steady_clock::time_point fake_now{};
  interlock::retry_environment env{[&] {
                                     if (++reads > 1) throw std::runtime_error("clock");
                                     return fake_now;
                                   },
                                   [&](std::chrono::nanoseconds d) { fake_now += d; },
                                   [] { return std::uint64_t{12345}; }};
  const auto policy = interlock::retry_policy::exponential(
      std::chrono::milliseconds(1), std::chrono::milliseconds(8), interlock::jitter_kind::none, 5);
  const auto result = record.update(fn, policy, env);
  CHECK(result.status == versioned<TestType>::update_status::committed);
  CHECK(result.attempts == 2);
  CHECK(record.version() == 3);  // the interfering commit and ours, once
}
