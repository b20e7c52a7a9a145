// interlock/config.hpp: version, assertions, sanitizer detection, namespaces.
//
// Design note: every interlock header includes this one first. It holds the few
// build-wide decisions: the library version, the INTERLOCK_ASSERT hook (override it
// by defining INTERLOCK_ASSERT before including any interlock header), detection of
// ThreadSanitizer (some primitives swap an asymmetric fence for a symmetric one that
// TSan understands), of AddressSanitizer (pools poison the blocks they keep, so a use
// after free is still reported), and the cache-line size used to keep hot atomics
// apart.
//
// Nothing here allocates, throws or touches shared state.
#ifndef INTERLOCK_CONFIG_HPP
#define INTERLOCK_CONFIG_HPP

#include <cstddef>
#include <cstdio>
#include <cstdlib>

#define INTERLOCK_VERSION_MAJOR 0
#define INTERLOCK_VERSION_MINOR 1
#define INTERLOCK_VERSION_PATCH 0
#define INTERLOCK_VERSION_STRING "0.1.0"
/// One integer that grows with every release: major * 10000 + minor * 100 + patch.
#define INTERLOCK_VERSION \
  (INTERLOCK_VERSION_MAJOR * 10000 + INTERLOCK_VERSION_MINOR * 100 + INTERLOCK_VERSION_PATCH)

// ---- ThreadSanitizer detection ---------------------------------------------
#if defined(__SANITIZE_THREAD__)
#define INTERLOCK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define INTERLOCK_TSAN 1
#endif
#endif
#ifndef INTERLOCK_TSAN
#define INTERLOCK_TSAN 0
#endif

// ---- AddressSanitizer: poisoning blocks a pool keeps --------------------
#if defined(__SANITIZE_ADDRESS__)
#define INTERLOCK_DETAIL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INTERLOCK_DETAIL_ASAN 1
#endif
#endif
#ifdef INTERLOCK_DETAIL_ASAN
#include <sanitizer/asan_interface.h>
#define INTERLOCK_DETAIL_POISON(block, size) ASAN_POISON_MEMORY_REGION(block, size)
#define INTERLOCK_DETAIL_UNPOISON(block, size) ASAN_UNPOISON_MEMORY_REGION(block, size)
#else
#define INTERLOCK_DETAIL_POISON(block, size) ((void)(block), (void)(size))
#define INTERLOCK_DETAIL_UNPOISON(block, size) ((void)(block), (void)(size))
#endif

// ---- Assertions ------------------------------------------------------------
// INTERLOCK_ASSERT(condition, message) checks an internal invariant or a documented
// precondition. By default it is active unless NDEBUG is defined and, when it
// fails, prints the location and message to stderr and aborts. Define
// INTERLOCK_ASSERT yourself (before the first interlock include) to route failures
// to your own handler, or to `((void)0)` to compile the checks out.
#ifndef INTERLOCK_ASSERT
#ifdef NDEBUG
#define INTERLOCK_ASSERT(condition, message) ((void)0)
#else
#define INTERLOCK_ASSERT(condition, message) \
  ((condition) ? (void)0                     \
               : ::interlock::detail::assertion_failed(#condition, message, __FILE__, __LINE__))
#endif
#endif

#define INTERLOCK_NAMESPACE_BEGIN \
  namespace interlock {           \
  inline namespace v0 {
#define INTERLOCK_NAMESPACE_END \
  }                             \
  }

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

[[noreturn]] inline void assertion_failed(const char* condition, const char* message,
                                          const char* file, int line) noexcept {
  std::fprintf(stderr, "interlock: assertion failed: %s (%s) at %s:%d\n", message, condition, file,
               line);
  std::abort();
}

/// The distance that keeps two hot atomics from sharing a cache line (or an
/// adjacent-line prefetch pair on x86). A constant, unlike
/// std::hardware_destructive_interference_size, so the layout of a type never
/// changes with compiler flags.
#if defined(__x86_64__) || defined(_M_X64) || defined(__aarch64__)
inline constexpr std::size_t cache_line_size = 128;
#else
inline constexpr std::size_t cache_line_size = 64;
#endif

}  // namespace detail

/// The library version as a string, e.g. "0.1.0".
inline constexpr const char* version_string() noexcept { return INTERLOCK_VERSION_STRING; }

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_CONFIG_HPP
