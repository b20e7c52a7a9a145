// interlock/interlock.hpp: the whole library. Includes every public header and
// nothing else.
#ifndef INTERLOCK_INTERLOCK_HPP
#define INTERLOCK_INTERLOCK_HPP

#include <interlock/cas_slot.hpp>
#include <interlock/causal_buffer.hpp>
#include <interlock/config.hpp>
#include <interlock/hybrid_clock.hpp>
#include <interlock/idempotency_guard.hpp>
#include <interlock/keyed_mutex.hpp>
#include <interlock/lamport_clock.hpp>
#include <interlock/retry.hpp>
#include <interlock/sha256.hpp>
#include <interlock/vector_clock.hpp>
#include <interlock/versioned.hpp>

#endif  // INTERLOCK_INTERLOCK_HPP
