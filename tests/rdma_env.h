// Addresses of the two RDMA devices a test may use: SOFTROCE_IPS inside the
// SoftRoCE VM, or GEOPS_RDMA_TEST_IPS="a b" on a machine with real NICs.
#pragma once

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace geops::testing {

inline std::vector<std::string> RdmaIps() {
  const char* v = std::getenv("GEOPS_RDMA_TEST_IPS");
  if (v == nullptr) v = std::getenv("SOFTROCE_IPS");
  std::vector<std::string> out;
  if (v != nullptr) {
    std::istringstream in(v);
    for (std::string ip; in >> ip;) out.push_back(ip);
  }
  if (out.empty()) out.push_back("10.9.0.1");
  if (out.size() == 1) out.push_back(out[0]);
  return out;
}

}  // namespace geops::testing
