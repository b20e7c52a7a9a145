// Test support: a node id whose copy throws once, on demand.
//
// It injects a failure at every point where a vector clock or a causal buffer copies
// an id (as copying a long std::string id allocates), without replacing operator new
// in the shared test binary. Moves never throw, like std::string's. Arm it with a
// copy_failure_after in scope; single-threaded tests only (the arming is a plain
// static).
#ifndef INTERLOCK_TESTS_SUPPORT_FRAGILE_ID_HPP
#define INTERLOCK_TESTS_SUPPORT_FRAGILE_ID_HPP

#include <compare>
#include <exception>
#include <string>

namespace interlock_test {

/// What fragile_id throws.
struct injected_failure : std::exception {
  [[nodiscard]] const char* what() const noexcept override { return "injected failure"; }
};

struct fragile_id {
  static inline int copies_before_throw = -1;  // -1: never throw

  std::string name;

  fragile_id() = default;
  fragile_id(const char* text) : name(text) {}  // NOLINT: implicit, for brace lists
  fragile_id(const fragile_id& other) : name(checked(other.name)) {}
  fragile_id(fragile_id&&) noexcept = default;
  fragile_id& operator=(const fragile_id& other) {
    name = checked(other.name);
    return *this;
  }
  fragile_id& operator=(fragile_id&&) noexcept = default;
  ~fragile_id() = default;
  friend auto operator<=>(const fragile_id&, const fragile_id&) = default;
  friend bool operator==(const fragile_id&, const fragile_id&) = default;

 private:
  static const std::string& checked(const std::string& source) {
    if (copies_before_throw == 0) {
      copies_before_throw = -1;  // one failure per arming
      throw injected_failure{};
    }
    if (copies_before_throw > 0) --copies_before_throw;
    return source;
  }
};

/// Arms fragile_id to throw on the copy after the next `copies`; disarms when it goes.
class copy_failure_after {
 public:
  explicit copy_failure_after(int copies) { fragile_id::copies_before_throw = copies; }
  copy_failure_after(const copy_failure_after&) = delete;
  copy_failure_after& operator=(const copy_failure_after&) = delete;
  ~copy_failure_after() { fragile_id::copies_before_throw = -1; }
};

}  // namespace interlock_test

#endif  // INTERLOCK_TESTS_SUPPORT_FRAGILE_ID_HPP
