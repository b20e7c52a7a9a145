// Scenario: replicas apply messages out of order. Three replicas of a small bank (one
// account per replica) exchange operations over a network that delays and reorders
// them: deposits into one's own account, and transfers out of it, issued only against
// money the issuing replica has seen arrive. Applied in arrival order, some operations
// run before one they depend on ("misapplied": a transfer before the transfer that
// funded it, overdrawing an account); through causal_buffer none do, no account is
// ever overdrawn, and all replicas end equal. Both sides see the same seeded network.
#include "scenario.hpp"

#include <interlock/causal_buffer.hpp>
#include <interlock/vector_clock.hpp>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

struct operation {
  std::uint64_t replica = 0;  // the issuer; its account pays
  std::uint64_t to = 0;       // == replica: a deposit; otherwise a transfer
  std::int64_t amount = 0;
  interlock::vector_clock<> clock;
};

struct run_result {
  std::uint64_t misapplied = 0;  // applied before a causal predecessor
  std::uint64_t overdrafts = 0;  // an account seen below zero
  std::uint64_t applied = 0;
  bool converged = true;  // every replica ends with the same accounts
};

constexpr std::uint64_t replicas = 3;
constexpr std::uint64_t operations_per_run = 3000;

// True when `op` is applied before something it depends on, judged by the clock of
// what the replica has applied so far.
bool is_misapplied(const operation& op, const interlock::vector_clock<>& applied) {
  for (const auto& e : op.clock.entries()) {
    const std::uint64_t needed = e.node == op.replica ? e.counter - 1 : e.counter;
    if (applied.get(e.node) < needed) return true;
  }
  return false;
}

// Generates the operations and the order in which each replica receives the others'.
// causal: deliver through causal_buffer; otherwise apply in arrival order.
run_result run(bool causal) {
  std::mt19937_64 random(40);
  std::vector<operation> ops;
  // accounts[at][owner]: replica at's copy of owner's account
  std::vector<std::vector<std::int64_t>> accounts(replicas, std::vector<std::int64_t>(replicas, 0));
  std::vector<interlock::vector_clock<>> applied(replicas);
  std::vector<interlock::causal_buffer<std::size_t>> buffers(replicas);
  std::multimap<std::uint64_t, std::pair<std::uint64_t, std::size_t>> network;  // time -> (to, op)
  run_result result;

  auto apply = [&](std::uint64_t at, std::size_t index) {
    const operation& op = ops[index];
    if (is_misapplied(op, applied[at])) ++result.misapplied;
    auto& copy = accounts[at];
    if (op.to == op.replica) {
      copy[op.replica] += op.amount;
    } else {
      copy[op.replica] -= op.amount;
      copy[op.to] += op.amount;
      if (copy[op.replica] < 0) ++result.overdrafts;
    }
    applied[at].merge(op.clock);
    ++result.applied;
  };

  std::uint64_t now = 0;
  while (ops.size() < operations_per_run || !network.empty()) {
    if (ops.size() < operations_per_run) {
      const std::uint64_t r = random() % replicas;
      const std::int64_t mine = accounts[r][r];
      operation op;
      op.replica = r;
      if (mine > 0 && random() % 3 != 0) {  // transfer only money this replica has seen
        op.to = (r + 1 + random() % (replicas - 1)) % replicas;
        op.amount = 1 + static_cast<std::int64_t>(random() % static_cast<std::uint64_t>(mine));
      } else {
        op.to = r;
        op.amount = 1 + static_cast<std::int64_t>(random() % 20);
      }
      if (causal) {
        op.clock = buffers[r].stamp_send(r);
      } else {
        op.clock = applied[r];
        op.clock.tick(r);
      }
      ops.push_back(op);
      const std::size_t index = ops.size() - 1;
      apply(r, index);
      --result.applied;  // the issuer's own application is not a message
      for (std::uint64_t to = 0; to < replicas; ++to) {
        if (to != r) network.emplace(now + 1 + random() % 30, std::pair{to, index});
      }
    }
    while (!network.empty() && network.begin()->first <= now) {
      const std::uint64_t to = network.begin()->second.first;
      const std::size_t index = network.begin()->second.second;
      network.erase(network.begin());
      const operation& op = ops[index];
      if (causal) {
        buffers[to].offer(op.replica, op.clock, index, [&](auto&& d) { apply(to, d.message); });
      } else {
        apply(to, index);
      }
    }
    ++now;
  }
  for (std::uint64_t r = 1; r < replicas; ++r) {
    result.converged = result.converged && accounts[r] == accounts[0];
  }
  return result;
}

std::string describe(const run_result& r) {
  return std::to_string(r.misapplied) + " msgs misapplied, " + std::to_string(r.overdrafts) +
         " overdrawn";
}

demo::registration reg{40, [] {
                         auto [naive, naive_ms] = demo::timed([] { return run(false); });
                         auto [causal, causal_ms] = demo::timed([] { return run(true); });
                         demo::row row;
                         row.scenario = "out-of-order delivery";
                         row.naive = {describe(naive), naive_ms};
                         row.interlock = {describe(causal), causal_ms};
                         row.interlock_correct =
                             causal.misapplied == 0 && causal.overdrafts == 0 && causal.converged &&
                             causal.applied == operations_per_run * (replicas - 1);
                         return row;
                       }};

}  // namespace
