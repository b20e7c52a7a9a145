// Two tabs edit one document. Naive: each tab loads the document, edits its copy and
// saves it back (every load and save under a mutex, so no data race), and the last
// save wins: the other tab's edit is silently lost. interlock: versioned<document>,
// where a save on top of a stale version is a conflict that carries what is current,
// and the tab re-applies its edit to it and saves again.
#include "scenario.hpp"

#include <interlock/versioned.hpp>

#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace {

struct document {
  std::string last_editor;
  std::uint64_t edits[2] = {0, 0};  // edits made by each tab
};

constexpr int edits_per_tab = 20'000;
constexpr std::uint64_t total_edits = 2 * edits_per_tab;

document edited(document d, int tab) {
  d.last_editor = tab == 0 ? "tab A" : "tab B";
  ++d.edits[tab];
  return d;
}

std::uint64_t edits_kept(const document& d) { return d.edits[0] + d.edits[1]; }

/// Load, think, save: the save overwrites whatever happened in between.
demo::outcome run_naive() {
  std::mutex mutex;
  document stored;
  auto tab = [&](int which) {
    for (int i = 0; i < edits_per_tab; ++i) {
      document copy;
      {
        std::lock_guard lock(mutex);
        copy = stored;
      }
      copy = edited(std::move(copy), which);
      std::this_thread::yield();  // the user thinks; the other tab saves meanwhile
      std::lock_guard lock(mutex);
      stored = std::move(copy);
    }
  };
  auto [lost, ms] = demo::timed([&] {
    std::thread a(tab, 0);
    std::thread b(tab, 1);
    a.join();
    b.join();
    return total_edits - edits_kept(stored);
  });
  return {std::to_string(lost) + " of " + std::to_string(total_edits) + " edits lost", ms};
}

struct interlock_result {
  std::uint64_t lost = 0;
  std::uint64_t conflicts = 0;
  bool versions_match = false;
};

/// Read, think, try_commit; a conflict carries the current document, onto which the
/// tab re-applies its edit before trying again.
interlock_result run_interlock_tabs() {
  interlock::versioned<document> stored;
  std::uint64_t conflicts[2] = {0, 0};
  auto tab = [&](int which) {
    for (int i = 0; i < edits_per_tab; ++i) {
      auto seen = stored.read();
      document mine = edited(std::move(seen.value), which);
      std::this_thread::yield();  // the same think time as the naive tab
      auto result = stored.try_commit(seen.version, mine);
      while (!result.committed) {
        ++conflicts[which];
        const interlock::version_type current = result.version;
        result = stored.try_commit(current, edited(std::move(*result.current), which));
      }
    }
  };
  std::thread a(tab, 0);
  std::thread b(tab, 1);
  a.join();
  b.join();
  const auto final_state = stored.read();
  interlock_result r;
  r.lost = total_edits - edits_kept(final_state.value);
  r.conflicts = conflicts[0] + conflicts[1];
  // Every edit committed exactly once: version 1 plus one per edit.
  r.versions_match = final_state.version == 1 + total_edits;
  return r;
}

}  // namespace

static demo::registration reg{
    50, [] {
      demo::row row;
      row.scenario = "two tabs, last write wins";
      row.naive = run_naive();
      auto [r, ms] = demo::timed(run_interlock_tabs);
      row.interlock = {
          std::to_string(r.lost) + " lost, " + std::to_string(r.conflicts) + " conflicts merged",
          ms};
      row.interlock_correct = r.lost == 0 && r.versions_match;
      return row;
    }};
