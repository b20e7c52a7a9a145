// cas_slot: a shared configuration document with an ETag.
//
// Two editors change the same document. Each reads it, edits its copy and commits
// with compare_exchange against the ETag it read (like HTTP If-Match). The second
// commit conflicts; the conflict carries the winner's snapshot, so the editor
// re-applies its edit to that and commits again, and no edit is lost. A watcher
// thread sleeps in wait_for_change_for until the document changes. tour() is the
// example that README.md shows (the region between the readme markers).
//
// Exits 0 when everything happened as expected, 1 otherwise.
#include <interlock/cas_slot.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

struct config_doc {
  std::string endpoint;
  std::uint32_t timeout_ms = 0;
  std::vector<std::string> features;
};

// Which bytes identify a config_doc: every field, through encode_field so that the
// encoding is unambiguous.
template <>
struct interlock::content_codec<config_doc> {
  template <interlock::byte_sink Sink>
  static void encode(const config_doc& doc, Sink& sink) {
    interlock::encode_field(sink, doc.endpoint);
    interlock::encode_field(sink, doc.timeout_ms);
    interlock::encode_field(sink, doc.features);
  }
};

namespace {

int failures = 0;

void expect(bool condition, const char* what) {
  std::printf("%s %s\n", condition ? "ok  " : "FAIL", what);
  if (!condition) ++failures;
}

std::string short_etag(const interlock::digest& etag) { return etag.to_hex().substr(0, 12); }

// The README's tour: one read-modify-write with compare_exchange, the update loop,
// and a bounded wait for a change.
void tour() {
  using namespace std::chrono_literals;
  // [readme:cas_slot]
  interlock::cas_slot<config_doc> config(config_doc{"https://api", 500, {}});

  auto seen = config.load();  // {value, etag, stamp}; never blocks
  config_doc edited = *seen;
  edited.timeout_ms = 800;
  auto r = config.compare_exchange(seen.etag(), edited);  // like HTTP If-Match
  if (!r.committed) {
    // r.current is the snapshot that won: re-apply the edit to it and retry
  }

  config.update([](const config_doc& d) {  // fn may run again on a conflict
    auto n = d;
    n.features.push_back("x");
    return n;
  });
  auto next = config.wait_for_change_for(r.current.stamp(), 100ms);  // newer snapshot or nullopt
  // [/readme:cas_slot]

  expect(r.committed, "tour: compare_exchange against the ETag just read commits");
  expect(r.current->timeout_ms == 800, "tour: the result carries the committed snapshot");
  expect(next.has_value() && (*next)->features.size() == 1 && (*next)->timeout_ms == 800,
         "tour: the wait returns the newer snapshot that update committed");
}

}  // namespace

int main() {
  using namespace std::chrono_literals;
  tour();

  // Two editors and a watcher.
  interlock::cas_slot<config_doc> config;

  // Create-only write: succeeds on the empty slot.
  auto created = config.try_create(config_doc{"https://api.example.com", 500, {"search"}});
  expect(created.committed, "the document is created once");
  std::printf("     v%llu etag %s\n", static_cast<unsigned long long>(created.current.stamp()),
              short_etag(created.current.etag()).c_str());

  // A watcher waits for the next change after the stamp it has seen.
  std::optional<std::string> watched_endpoint;
  std::thread watcher([&config, &watched_endpoint, seen = created.current.stamp()] {
    if (auto changed = config.wait_for_change_for(seen, 10s)) {
      watched_endpoint = changed->value().endpoint;
    }
  });

  // Two editors read the same version.
  const auto read_by_alice = config.load();
  const auto read_by_bob = config.load();

  // Alice raises the timeout and commits against the ETag she read.
  config_doc alice_copy = read_by_alice.value();
  alice_copy.timeout_ms = 2000;
  auto alice = config.compare_exchange(read_by_alice.etag(), alice_copy);
  expect(alice.committed, "alice's edit commits");

  // Bob moves the endpoint, but his ETag is stale: conflict, with Alice's version.
  config_doc bob_copy = read_by_bob.value();
  bob_copy.endpoint = "https://eu.api.example.com";
  auto bob = config.compare_exchange(read_by_bob.etag(), bob_copy);
  expect(!bob.committed, "bob's edit from a stale ETag conflicts");
  expect(bob.current.value().timeout_ms == 2000, "the conflict carries alice's version");

  // Bob re-applies his edit to the version that won and retries without reloading.
  while (!bob.committed) {
    config_doc rebased = bob.current.value();
    rebased.endpoint = "https://eu.api.example.com";
    bob = config.compare_exchange(bob.current.etag(), std::move(rebased));
  }
  expect(bob.committed, "bob's rebased edit commits");

  const auto final_doc = config.load();
  std::printf("     v%llu etag %s: %s, %u ms\n", static_cast<unsigned long long>(final_doc.stamp()),
              short_etag(final_doc.etag()).c_str(), final_doc->endpoint.c_str(),
              final_doc->timeout_ms);
  expect(final_doc->timeout_ms == 2000 && final_doc->endpoint == "https://eu.api.example.com",
         "both edits are in the final document");
  expect(final_doc.etag() == interlock::content_digest(*final_doc),
         "the ETag is the SHA-256 of the content");

  // Writing back identical content keeps the ETag (content identity), but the stamp
  // moves on, so a waiter keyed on the stamp still sees the commit.
  const auto rewritten = config.store(*final_doc);
  expect(rewritten.etag() == final_doc.etag(), "identical content keeps its ETag");
  expect(rewritten.stamp() > final_doc.stamp(), "every commit gets a newer stamp");

  watcher.join();
  expect(watched_endpoint.has_value(), "the watcher woke on a change");

  // Nothing changes now: a bounded wait times out.
  expect(!config.wait_for_change_for(rewritten.stamp(), 20ms).has_value(),
         "a wait with no change times out");

  // A snapshot stays valid however the document moves on.
  config.update([](const config_doc& doc) {
    config_doc next = doc;
    next.features.push_back("recommendations");
    return next;
  });
  expect(read_by_alice->timeout_ms == 500, "an old snapshot still reads its own version");
  expect(config.load()->features.size() == 2, "update appended a feature");

  std::printf("%s\n", failures == 0 ? "all as expected" : "UNEXPECTED RESULTS");
  return failures == 0 ? 0 : 1;
}
