// interlock/interlock.hpp: the whole library. Includes every public header and
// nothing else.
#ifndef INTERLOCK_INTERLOCK_HPP
#define INTERLOCK_INTERLOCK_HPP

#include <interlock/config.hpp>
#include <interlock/cas_slot.hpp>
#include <interlock/idempotency_guard.hpp>
#include <interlock/lamport_clock.hpp>
#include <interlock/sha256.hpp>

#endif  // INTERLOCK_INTERLOCK_HPP
