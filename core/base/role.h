// Role: what a process does in one tier, the one vocabulary of roles.
//
// Every process belongs to its party's tier, the global tier, or both, and
// has a Role in each: a party's server is a kServer of its party's tier and
// a kWorker of the global tier (the global servers' client); a global
// server is a kServer of the global tier; the global scheduler is the
// global tier's kScheduler. The values travel on the wire (node tables).
#pragma once

#include <cstdint>

namespace geops {

enum class Role : uint8_t { kScheduler = 0, kServer = 1, kWorker = 2 };

inline const char* RoleName(Role r) {
  switch (r) {
    case Role::kScheduler: return "scheduler";
    case Role::kServer: return "server";
    case Role::kWorker: return "worker";
  }
  return "?";
}

}  // namespace geops
